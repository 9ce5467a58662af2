// A frontend's use of the packed `@audience-gateway/client`, bundled with esbuild as an app
// bundles it (tests/browser/client-flow.mjs drives it). The gateway's URL comes from the
// page's `?gateway=` parameter; the token is whatever `app.setToken` set last, asked for
// by the client on every request, as an app's auth module would answer.
import { AudienceGateway, ProblemError } from "@audience-gateway/client";

const gateway = new URL(location.href).searchParams.get("gateway");
let token = "";
const gw = new AudienceGateway({ baseUrl: gateway, token: () => token });
const kept = new Map();

/** A client method's answer as plain data (what the test can see of it). */
function summary(answer) {
  return {
    ok: true,
    status: answer.response.status,
    data: answer.data ?? null,
    etag: answer.etag ?? null,
    cacheStatus: answer.cacheStatus ?? null,
    audienceChanged: answer.audienceChanged ?? null,
  };
}

window.app = {
  setToken(value) {
    token = value;
  },
  /**
   * Calls `gw[method](...args)`; an argument `{ kept: name }` stands for an answer kept
   * before with `keepAs` (a read, create or update to chain a write on). Returns the
   * answer's summary, or the problem (`status`, `code`), or the error of a failed fetch.
   */
  async call(method, args = [], keepAs = undefined) {
    const resolved = args.map((a) =>
      a !== null && typeof a === "object" && "kept" in a ? kept.get(a.kept) : a,
    );
    try {
      const answer = await gw[method](...resolved);
      if (keepAs !== undefined) kept.set(keepAs, answer);
      return summary(answer);
    } catch (e) {
      if (e instanceof ProblemError) return { ok: false, status: e.status, code: e.code };
      return { ok: false, error: String(e) };
    }
  },
};
document.getElementById("state").textContent = "ready";
