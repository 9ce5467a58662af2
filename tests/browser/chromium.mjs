// Launches Debian's Chromium (CHROMIUM, default /usr/bin/chromium) headless through the
// playwright-core `chromium` given, with the flags this machine needs: no sandbox as root,
// no GPU, and none of the background connections a closed network refuses. Playwright never
// downloads a browser of its own here.
export function launchChromium(chromium) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
