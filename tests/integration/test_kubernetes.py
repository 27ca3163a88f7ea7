"""deploy/kubernetes/, played for real by `podman kube play` against the sidecar image
that test_docker.py builds (and under the same conditions: its pytestmark).

What podman 4.3 (Debian 12) plays and what the test does about the rest:
- Pod, ConfigMap and PersistentVolumeClaim documents are played as they are; a
  DaemonSet is not a kind it knows, so its pod template is played as a Pod.
- A Secret document is not played: the test makes the podman secret the pod's secret
  volume reads, from the manifest's Secret. podman writes its `data` values into the
  volume as given (not base64-decoded), so the test hands it the key itself.
- mountPropagation is honoured (Bidirectional: rshared; HostToContainer: rslave) when
  the volume's folder on the host is a shared mount, as a kubelet's are; this host's /
  is private, so the test makes the emptyDir's folder (a podman volume) and the
  DaemonSet's hostPath shared bind mounts first.
- restartPolicy is not acted on: after killing the sidecar, the test starts it again.
- `ports` cannot go with the host's network (which reaches the test's Azurite), so
  they are dropped; metrics are scraped on the host's loopback instead.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from blobmount.config import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import is_mounted, upload, wait_for
from .test_docker import _running, images, podman, pytestmark, shared  # noqa: F401

DEPLOY = Path(__file__).resolve().parents[2] / "deploy/kubernetes"


class Play:
    """One test's copy of a manifest, named apart from every other test's, with the
    sidecar image and the Azurite account of the test; played, and taken down."""

    def __init__(self, runner, tmp_path: Path, manifest: str, azurite, container: str,
                 image: str, base: str) -> None:
        self.podman, self.tmp_path = runner, tmp_path
        self.tag = uuid.uuid4().hex[:8]
        self.docs = {doc["kind"]: doc for doc in yaml.safe_load_all(
            (DEPLOY / manifest).read_text())}
        self.files: list[Path] = []
        self.volumes: list[str] = []   # removed at the end
        self.shared: list[Path] = []   # shared bind mounts made on the host
        self.secret = self._rename(self.docs["Secret"])
        self.config = self._rename(self.docs["ConfigMap"])
        config = yaml.safe_load(self.docs["ConfigMap"]["data"]["config.yaml"])
        config["accounts"]["main"].update(account_name=AZURITE_ACCOUNT,
                                          endpoint=azurite.endpoint)
        config["mounts"][0]["container"] = container
        # Async uploads wait this long: what is written now stays in the journal.
        config["upload_batch_window"] = 300
        config["metrics_address"] = "127.0.0.1:0"
        self.docs["ConfigMap"]["data"]["config.yaml"] = yaml.safe_dump(config)
        self.image, self.base = image, base

    def _rename(self, doc: dict) -> str:
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{self.tag}"
        return doc["metadata"]["name"]

    def pod(self, spec: dict, name: str) -> dict:
        """A Pod of `spec`, on this test's image, secret and config, named apart."""
        for container in spec["containers"]:
            container["image"] = self.image if container["name"] == "blobmount" else self.base
            container.pop("ports", None)
        for volume in spec["volumes"]:
            if "secret" in volume:
                volume["secret"]["secretName"] = self.secret
            if "configMap" in volume:
                volume["configMap"]["name"] = self.config
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-{self.tag}"}, "spec": spec}

    def make_secret(self) -> None:
        secret = dict(self.docs["Secret"])
        secret["data"] = secret.pop("stringData")
        secret["data"]["account_key"] = AZURITE_KEY
        path = self.tmp_path / f"secret-{self.tag}.yaml"
        path.write_text(yaml.safe_dump(secret))
        self.podman("secret", "create", self.secret, str(path))

    def shared_volume(self, name: str) -> Path:
        """A podman volume whose folder is a shared mount (as a kubelet's are)."""
        self.podman("volume", "create", name)
        self.volumes.append(name)
        folder = Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                  name).stdout.decode().strip())
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        self.shared.append(folder)
        subprocess.run(["mount", "--make-rshared", str(folder)], check=True)
        return folder

    def play(self, *docs: dict) -> Path:
        path = self.tmp_path / f"play-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        self.files.append(path)
        self.podman("kube", "play", "--network", "host", str(path), timeout=300)
        return path

    def down(self) -> None:
        for path in reversed(self.files):
            self.podman("kube", "down", str(path), check=False, timeout=300)
        for folder in self.shared:
            if is_mounted(folder / "blob"):
                subprocess.run(["umount", "-l", str(folder / "blob")], check=False)
            subprocess.run(["umount", "-l", str(folder)], check=False)
        # podman keeps the secret's and the ConfigMap's files as volumes of those names.
        self.podman("volume", "rm", "-f", *self.volumes, self.secret, self.config,
                    check=False)
        self.podman("secret", "rm", self.secret, check=False)

    def logs(self, container: str) -> str:
        result = self.podman("logs", container, check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    def exec(self, container: str, *command: str, check: bool = True) -> bytes:
        return self.podman("exec", container, *command, check=check).stdout


def _scrape(play: Play, sidecar: str, mountpoint: str) -> str:
    status = json.loads(play.exec(sidecar, "blobmount", "status", mountpoint, "--json"))
    with urllib.request.urlopen(status["metrics"], timeout=30) as answer:
        return answer.read().decode()


@pytest.fixture
def play(podman, images, tmp_path, azurite, container):  # noqa: F811
    made: list[Play] = []

    def make(manifest: str) -> Play:
        image, base = images
        made.append(Play(podman, tmp_path, manifest, azurite, container.container_name,
                         image, base))
        made[-1].make_secret()
        return made[-1]

    yield make
    for each in made:
        each.down()


def test_the_pod_serves_its_app_and_keeps_the_journal_across_a_kill(play, container):
    upload(container, {"hello.txt": b"hello from the blob\n"})
    kube = play("pod.yaml")
    pvc = kube._rename(kube.docs["PersistentVolumeClaim"])
    spec = kube.docs["Pod"]["spec"]
    volume = spec["volumes"][0]  # the emptyDir the two containers share
    assert volume["name"] == "shared" and "emptyDir" in volume
    for claim in spec["volumes"]:
        if "persistentVolumeClaim" in claim:
            claim["persistentVolumeClaim"]["claimName"] = pvc
    kube.volumes.append(pvc)
    shared_name = f"shared-{kube.tag}"
    volume["name"] = shared_name
    for each in spec["containers"]:
        for mount in each["volumeMounts"]:
            if mount["name"] == "shared":
                mount["name"] = shared_name
    folder = kube.shared_volume(shared_name)
    pod = kube.pod(spec, "blobmount-app")
    kube.play(kube.docs["ConfigMap"], kube.docs["PersistentVolumeClaim"], pod)
    name = pod["metadata"]["name"]
    sidecar, app = f"{name}-blobmount", f"{name}-app"

    # The app container (uid 1000, no device, no capability) waits for the mount and
    # lists it: HostToContainer brought it the sidecar's mount.
    wait_for(lambda: "hello.txt" in kube.logs(app), timeout=120,
             what=f"the app to list the mount; sidecar: {kube.logs(sidecar)}")
    assert kube.exec(app, "/bin/cat", "/data/blob/datasets/hello.txt") == (
        b"hello from the blob\n")
    assert kube.exec(app, "/usr/bin/id", "-u") == b"1000\n"
    # The key came from the Secret's file: the account took it.
    assert "blobmount_remote_requests_total{" in _scrape(kube, sidecar, "/data/blob")
    # ...and the host, through the shared emptyDir (Bidirectional).
    assert (folder / "blob/datasets/hello.txt").read_bytes() == b"hello from the blob\n"

    # An async write, journaled on the PVC, then the sidecar killed before its upload.
    kube.exec(app, "/bin/sh", "-c", "echo from-app > /data/blob/datasets/app.txt")
    assert "app.txt" not in [blob.name for blob in container.list_blobs()]
    kube.podman("kill", "--signal", "KILL", sidecar)
    wait_for(lambda: not _running(kube.podman, sidecar), what="the sidecar to die")
    # restartPolicy Always, which podman 4.3 does not act on in a played pod: the test
    # starts the container again, as a kubelet would. The new sidecar detaches the
    # dead mount, uploads what the journal on the PVC holds, and mounts again.
    kube.podman("start", sidecar)
    wait_for(lambda: "app.txt" in [blob.name for blob in container.list_blobs()]
             or not _running(kube.podman, sidecar), timeout=180, what="the journaled upload")
    assert _running(kube.podman, sidecar), kube.logs(sidecar)
    assert container.download_blob("app.txt").readall() == b"from-app\n"
    wait_for(lambda: kube.exec(app, "/bin/cat", "/data/blob/datasets/app.txt",
                               check=False) == b"from-app\n",
             timeout=120, what="the app to see the new mount")
    assert "Traceback" not in kube.logs(sidecar)


def test_the_daemonset_mounts_on_the_node_for_every_pod(play, container, shared):  # noqa: F811
    upload(container, {"hello.txt": b"hello, node\n"})
    kube = play("daemonset.yaml")
    spec = kube.docs["DaemonSet"]["spec"]["template"]["spec"]
    cache = kube.tmp_path / "node-cache"
    cache.mkdir()
    for volume in spec["volumes"]:
        if volume["name"] == "node-mnt":  # the node's /mnt/blobmount: a shared folder here
            volume["hostPath"]["path"] = str(shared)
        if volume["name"] == "cache":
            volume["hostPath"]["path"] = str(cache)
    daemon = kube.pod(spec, "blobmount-node")
    kube.play(kube.docs["ConfigMap"], daemon)
    sidecar = f"{daemon['metadata']['name']}-blobmount"
    wait_for(lambda: is_mounted(shared / "blob") or not _running(kube.podman, sidecar),
             timeout=120, what="the node's mount")
    assert is_mounted(shared / "blob"), kube.logs(sidecar)
    assert (shared / "blob/datasets/hello.txt").read_bytes() == b"hello, node\n"
    assert (cache / "blobmount.sqlite").exists()  # the cache is the node's folder

    reader_spec = kube.docs["Pod"]["spec"]
    reader_spec["volumes"][0]["hostPath"]["path"] = str(shared)
    reader = kube.pod(reader_spec, "blobmount-reader")
    kube.play(reader)
    name = f"{reader['metadata']['name']}-reader"
    wait_for(lambda: "hello.txt" in kube.logs(name), timeout=120, what="the reader's listing")
    assert kube.exec(name, "/bin/cat", "/mnt/blobmount/blob/datasets/hello.txt") == (
        b"hello, node\n")
