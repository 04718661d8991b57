"""The image check: build images/Dockerfile for real and run every component in it the way the KFP backend runs it.

    python -m tests.deploy.image_check [--work DIR] [--keep]        (as root; .ci/run runs it after the test suite)

No Docker engine and no registry but Debian's and PyPI are needed: Debian's `buildah` (vfs storage, chroot isolation,
the host's network) builds the Dockerfile, on a stand-in base that `mmdebstrap` makes the way debian:bookworm-slim
(the Dockerfile's default base) is made (minbase: no Python, no compiler, no CA bundle), with nothing added but this
machine's CPU wheel of the pinned torch in its system packages, which the image keeps: every package the image needs
must come from the Dockerfile. Then the compiled pipeline runs under the backend's rules
(tests/backend/kfp_backend.py) with every component started in the image, as the image's user, from the compiled
command and an executor input as KFP's driver writes it, with the scratch volumes KFP's Argo compiler gives the pod
(argocompiler/container.go: /gcs, /s3, /minio, /.local, /.cache, /.config), a fresh /tmp and home, and the ConfigMaps
the tasks mount, against moto's S3 server behind TLS with a test CA, which the tasks get as an operator gives it
(`--store-ca-config-map`: a mounted file named in SSL_CERT_FILE): plan, one data shard and a few training steps per
split with torch.compile on (Inductor's CPU path: the compiler and Python's headers), assembly, a small evaluation.
Then, without SSL_CERT_FILE, the store's client in the image refuses that server, and reaches it once the CA is in
the system's bundle. It also checks that the build context and the image hold no `.env` file.
Prints a PASS or FAIL line per step; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from acgan.ensemble import load_ensemble
from acgan.experiment import split_statuses
from acgan.cluster_settings import ClusterSettings
from acgan.layout import split_prefix
from acgan.settings import RunSettings
from acgan.store import open_store, read_json
from pipelines.acgan_ensemble import STORE_CA_KEY
from pipelines.runs import compile_pipeline, pipeline_arguments
from tests.backend.kfp_backend import Backend, Execution
from tests.s3_test_server import s3_test_server

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/acgan-ensemble:check"
DEBIAN_RELEASE = "bookworm"  # images/Dockerfile's base, debian:bookworm-slim
BASE = f"localhost/acgan-standin-base:{DEBIAN_RELEASE}"
SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=4, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30, compile="on")
STORE_URI = "s3://acgan-check/run"
STORE_CA = "acgan-store-ca"  # the ConfigMap an operator makes of their CA bundle (docs/operators.md)
SCRATCH = ("/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config", "/tmp")
CANARY = "image-check-canary-secret"


def buildah(*args: str, capture: bool = True, timeout: float = 1800) -> str:
    done = subprocess.run(["buildah", "--storage-driver", "vfs", *args], capture_output=capture, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:2])}: exit {done.returncode}: "
                           f"{(done.stderr or '').strip()[-2000:]}")
    return (done.stdout or "").strip()


def ensure_tools() -> None:
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


# What `debian:bookworm-slim` is: debuerreotype bootstraps it with `debootstrap --variant=minbase` and, for the slim
# variant, has dpkg leave out documentation, manuals and translations (debuerreotype's scripts/debuerreotype-slimify,
# .slimify-excludes and .slimify-includes), which stays in force for what the Dockerfile installs.
SLIM_DPKG = [f"--dpkgopt=path-exclude={p}" for p in ("/usr/share/doc/*", "/usr/share/groff/*", "/usr/share/info/*",
                                                       "/usr/share/linda/*", "/usr/share/lintian/overrides/*",
                                                       "/usr/share/locale/*", "/usr/share/man/*")] + \
            [f"--dpkgopt=path-include={p}" for p in ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")]


def stand_in_base(work: Path) -> None:
    """What debian:bookworm-slim is (minbase: no python3, no CA bundle, no compiler), with nothing added but the
    pinned torch's CPU wheel where the Dockerfile's python3 will find it (the system site-packages), which the image
    keeps: every package the image needs, the Dockerfile must install itself."""
    wheels = work / "wheels"
    pinned = next(line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch=="))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", str(wheels), pinned], check=True)
    (wheel,) = wheels.glob("torch-*.whl")
    if "+cpu" not in wheel.name:
        raise RuntimeError(f"{wheel.name}: pip gave a CUDA wheel; the stand-in base needs the CPU one")
    target = '"$1/usr/local/lib/python3.11/dist-packages"'
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", *SLIM_DPKG,
                    f"--customize-hook={sys.executable} -m pip install --quiet --no-deps --no-compile "
                    f"--target {target} {wheel}", DEBIAN_RELEASE, str(work / "base.tar")], check=True)
    container = buildah("from", "scratch")
    buildah("add", container, str(work / "base.tar"), "/")
    buildah("commit", "--quiet", container, BASE)
    buildah("rm", container)


def build_image(context: Path) -> None:
    """Builds from a copy of the sources with a canary credentials file where docs/operators.md has users put theirs."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    (context / "manifests/base/core/store.env").write_text(f"AWS_SECRET_ACCESS_KEY={CANARY}\n")
    secret = ["--secret", "id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt"] \
        if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else []
    buildah("build", "--quiet", "--isolation", "chroot", "--network", "host", "--layers=false",
            "--build-arg", f"BASE_IMAGE={BASE}", *secret, "-f", "images/Dockerfile", "-t", IMAGE, str(context))


def context_is_clean(context: Path) -> None:
    """What the builder receives under the project's .dockerignore: copied whole into a throwaway image."""
    probe = context / "context-probe.Dockerfile"
    probe.write_text(f"FROM {BASE}\nCOPY . /context\n")
    buildah("build", "--quiet", "--isolation", "chroot", "--layers=false", "-f", str(probe), "-t",
            "localhost/acgan-context-probe", str(context))
    container = buildah("from", "--pull-never", "localhost/acgan-context-probe")
    try:
        listing = buildah("run", "--isolation", "chroot", container, "--", "find", "/context", "-type", "f")
    finally:
        buildah("rm", container)
        buildah("rmi", "localhost/acgan-context-probe")
    received = [line.removeprefix("/context/") for line in listing.splitlines()]
    leaked = [name for name in received if name.endswith(".env")]
    if leaked or not any(name.startswith("acgan/") for name in received):
        raise AssertionError(f"the build context holds {leaked or 'no sources'}")


def image_is_clean(container: str) -> None:
    mount = Path(buildah("mount", container))
    try:
        envs = [str(p.relative_to(mount)) for p in (mount / "opt").rglob("*.env")] + \
               [str(p.relative_to(mount)) for p in (mount / "home").rglob("*.env")]
        grep = subprocess.run(["grep", "-rlF", CANARY, str(mount / "opt"), str(mount / "home")],
                              capture_output=True, text=True)
    finally:
        buildah("umount", container)
    if envs or grep.stdout.strip():
        raise AssertionError(f"the image holds {envs} {grep.stdout.split()}")


class InImage:
    """Starts each component in the image's working container, as a pod's main container: fresh scratch volumes
    and home per task, the ConfigMaps' volumes (read-only), the image's user, the task's environment, the host's
    network (the S3 server)."""

    def __init__(self, container: str, work: Path, user: str, home: str, config_maps: dict[str, Path] | None = None):
        self.container, self.pods, self.user = container, work / "pods", user
        self.mounts = SCRATCH + (home,)
        self.config_maps = config_maps or {}  # mount path in the pod -> a folder holding the ConfigMap's files
        self.uid = int(user.split(":")[0])
        self.pod: Path | None = None

    def host_path(self, path: str) -> Path:
        """A path in the last task's pod, on this machine."""
        mount = next(m for m in self.mounts if path == m or path.startswith(m + "/"))
        return self.pod / mount.strip("/") / path[len(mount):].lstrip("/")

    def __call__(self, execution: Execution) -> int:
        return self.run(execution.task.rsplit("/", 1)[-1], execution.command, execution.env, execution.folders)

    def run(self, name: str, command: list[str], env: dict[str, str], folders: list[str] = (),
            user: str | None = None) -> int:
        """`command` in a pod of its own named `name` (its output in the pod's .log), as `user` (the image's)."""
        self.pod = self.pods / f"{len(list(self.pods.glob('*.log'))) if self.pods.exists() else 0:02d}-{name}"
        for mount in self.mounts:
            folder = self.pod / mount.strip("/")
            folder.mkdir(parents=True)
            folder.chmod(0o1777)  # an emptyDir: writable by any user
        for folder in folders:  # the launcher's prepareOutputFolders, as the pod's user
            self.host_path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(self.host_path(folder), self.uid, self.uid)
        volumes = [arg for mount in self.mounts for arg in ("-v", f"{self.pod / mount.strip('/')}:{mount}")]
        volumes += [arg for mount, folder in self.config_maps.items() for arg in ("-v", f"{folder}:{mount}:ro")]
        env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        with self.pod.with_suffix(".log").open("w") as log:
            return subprocess.run(["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "--network",
                                   "host", "--user", user or self.user, *volumes, *env_args, self.container, "--",
                                   *command], stdout=log, stderr=subprocess.STDOUT, timeout=900).returncode

    def output(self) -> str:
        """What the last pod printed."""
        return self.pod.with_suffix(".log").read_text()


def image_user() -> tuple[str, str]:
    """The image's user and home, as its config gives them."""
    config = json.loads(buildah("inspect", "--type", "image", IMAGE))["OCIv1"]["config"]
    return config["User"], next(e.split("=", 1)[1] for e in config["Env"] if e.startswith("HOME="))


def config_map_volumes(platform: dict, work: Path, files: dict[str, dict[str, bytes]]) -> dict[str, Path]:
    """The ConfigMaps the compiled tasks mount (every task the same ones: on_cluster), each as a folder of its files
    under `work`: mount path -> folder. A ConfigMap the tasks mount that `files` lacks stops the pod, as on a
    cluster."""
    mounts = {}
    for label, executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        for volume in executor.get("configMapAsVolume", []):
            name = volume["configMapName"]
            if name not in files:
                raise AssertionError(f"{label} mounts ConfigMap {name}, which does not exist: the pod cannot start")
            folder = work / "config-maps" / name
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
            for key, data in files[name].items():
                (folder / key).write_bytes(data)
                (folder / key).chmod(0o644)
            mounts[volume["mountPath"]] = folder
    return mounts


def run_pipeline(container: str, work: Path, s3: dict) -> str:
    """The pipeline in the image against the S3 server over https, its CA given as an operator gives it (a ConfigMap
    the tasks mount, SSL_CERT_FILE naming its file), every split trained with torch.compile on (Inductor's CPU path,
    which needs the compiler and Python's headers the GPU path needs too)."""
    user, home = image_user()
    cluster = ClusterSettings(image=IMAGE, store_ca_config_map=STORE_CA)
    spec, platform = yaml.safe_load_all(compile_pipeline(cluster, work / "pipeline.yaml").read_text())
    pod = InImage(container, work, user, home,
                  config_map_volumes(platform, work, {STORE_CA: {STORE_CA_KEY: s3["ca"].read_bytes()}}))
    backend = Backend(spec, platform, pipeline_root="s3://kfp-artifacts/image-check", execute=pod,
                      host_path=pod.host_path,
                      secrets={cluster.store_secret: {"AWS_ACCESS_KEY_ID": s3["access_key"],
                                                      "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}},
                      config_maps={cluster.store_config_map: {"ACGAN_S3_ENDPOINT": s3["endpoint"]}})
    # This process reads the store too; the tasks get the endpoint and keys only from the Secret and ConfigMap.
    os.environ.update(ACGAN_S3_ENDPOINT=s3["endpoint"], AWS_ACCESS_KEY_ID=s3["access_key"],
                      AWS_SECRET_ACCESS_KEY=s3["secret_key"], SSL_CERT_FILE=str(s3["ca"]))
    store = open_store(STORE_URI)
    store.ensure_ready(create=True)
    try:
        backend.submit(pipeline_arguments(RunSettings(store=store.uri, **SETTINGS)))
    except Exception as e:
        lines = [line for line in (pod.output() if pod.pod else "").splitlines() if line.strip()]
        raise AssertionError(f"{e}; its pod's last line: {lines[-1] if lines else '(none)'}") from None
    states = [(s.state, s.step) for s in split_statuses(store)]
    classes = sorted(m.class_id for m in load_ensemble(store).classes)
    evaluated = store.exists("eval/metrics.json") and store.exists("eval/report.html")
    compiled = [read_json(store, f"{split_prefix(s)}/config.json")["fast_path"]["compile"] for s in (0, 1)]
    if states != [("complete", 4), ("complete", 4)] or classes != list(range(10)) or not evaluated \
            or compiled != [True, True]:
        raise AssertionError(f"splits {states}, ensemble classes {classes}, evaluated {evaluated}, trained with "
                             f"torch.compile {compiled}")
    report = next(pod.pods.glob("*-evaluate-ensemble/s3/kfp-artifacts/**/report"))
    if report.stat().st_uid != pod.uid or b"<html" not in report.read_bytes()[:2000].lower():
        raise AssertionError(f"{report}: not an HTML report written by uid {pod.uid}")
    return f"{len(backend.executed)} tasks as user {user}, over https, each split trained with torch.compile"


def system_ca_bundle(container: str, work: Path, s3: dict) -> str:
    """Without SSL_CERT_FILE the store's client verifies with the image's system bundle: `acgan status` in the image
    refuses the test CA's server in one line; once the CA is added to the system's bundle the way a derived image
    adds one (update-ca-certificates, as root), the same command reaches the store."""
    user, home = image_user()
    ca = work / "system-ca"
    ca.mkdir()
    shutil.copy(s3["ca"], ca / "acgan-test.crt")
    pod = InImage(container, work, user, home, {"/run/acgan-test-ca": ca})
    env = {"ACGAN_S3_ENDPOINT": s3["endpoint"], "AWS_ACCESS_KEY_ID": s3["access_key"],
           "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}
    status = pod.run("status-untrusted", ["acgan", "status", "--store", STORE_URI], env)
    refused = "its TLS certificate failed verification (unable to get local issuer certificate)"
    if status != 2 or refused not in pod.output() or "Traceback" in pod.output():
        raise AssertionError(f"without the CA: exit {status}, {pod.output()[-500:]!r}")
    status = pod.run("add-ca", ["sh", "-c", "cp /run/acgan-test-ca/acgan-test.crt /usr/local/share/ca-certificates/ "
                                "&& update-ca-certificates"], {}, user="0:0")
    if status != 0:
        raise AssertionError(f"update-ca-certificates: exit {status}, {pod.output()[-500:]!r}")
    status = pod.run("status-trusted", ["acgan", "status", "--store", STORE_URI], env)
    if status != 0 or "2 of 2 splits complete" not in pod.output():
        raise AssertionError(f"with the CA in the system's bundle: exit {status}, {pod.output()[-500:]!r}")
    return "refused without the CA; reached once update-ca-certificates added it"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the build and the tasks' files (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the images and the work folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="acgan-image-check-"))
    work.mkdir(parents=True, exist_ok=True)
    failed, container = False, None

    def step(name: str, fn) -> object:
        nonlocal failed
        if failed:
            print(f"SKIP  {name}", flush=True)
            return None
        start = time.monotonic()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one line per failed step, then the rest is skipped
            failed = True
            print(f"FAIL  {name} ({time.monotonic() - start:.0f} s): {type(e).__name__}: {e}", flush=True)
            return None
        print(f"PASS  {name} ({time.monotonic() - start:.0f} s){f': {result}' if isinstance(result, str) else ''}",
              flush=True)
        return result

    try:
        step("buildah and mmdebstrap", ensure_tools)
        step("stand-in base (mmdebstrap minbase, as debian:bookworm-slim, CPU torch)", lambda: stand_in_base(work))
        step("image build (buildah, images/Dockerfile)", lambda: build_image(work / "context"))
        step("build context under .dockerignore: no .env file", lambda: context_is_clean(work / "context"))
        container = step("working container", lambda: buildah("from", "--pull-never", IMAGE))
        step("no .env file or credential in the image", lambda: image_is_clean(container))
        with s3_test_server(tls=work / "tls") as s3:
            step("the pipeline in the image under the backend's rules, over https, training compiled",
                 lambda: run_pipeline(container, work, s3))
            step("the store's client verifies with the image's system CA bundle",
                 lambda: system_ca_bundle(container, work, s3))
    finally:
        if container:
            buildah("rm", container)
        if not args.keep:
            subprocess.run(["buildah", "--storage-driver", "vfs", "rmi", "--force", IMAGE, BASE], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    print("image check: " + ("FAILED" if failed else "passed") + (f"; its files: {work}" if args.keep else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
