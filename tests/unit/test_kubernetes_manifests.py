"""deploy/kubernetes/: what a cluster needs of the sidecar and of the DaemonSet is in the
manifests (podman plays them for real in tests/integration/test_kubernetes.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from blobmount.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy/kubernetes"


def documents(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / name).read_text())}


def _mounts(container: dict) -> dict[str, dict]:
    return {mount["name"]: mount for mount in container["volumeMounts"]}


def _check_sidecar(docs: dict[str, dict], spec: dict, shared: str, tmp_path: Path) -> None:
    sidecar = spec["containers"][0]
    assert sidecar["securityContext"]["privileged"] is True  # Bidirectional requires it
    assert sidecar["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]
    mounts = _mounts(sidecar)
    assert mounts[shared]["mountPropagation"] == "Bidirectional"
    assert mounts["fuse"]["mountPath"] == "/dev/fuse"
    assert mounts["config"]["mountPath"] == "/etc/blobmount"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["fuse"]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    assert volumes["account"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert spec["terminationGracePeriodSeconds"] >= 600  # the uploads at the stop
    # The ConfigMap's config reads the key from the Secret's file and keeps the cache
    # on the cache volume; it loads (with the key file put where the test can reach).
    config = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])
    account = config["accounts"]["main"]
    secret_file = Path(mounts["account"]["mountPath"]) / "account_key"
    assert account["account_key_file"] == str(secret_file)
    assert secret_file.name in docs["Secret"]["stringData"]
    assert config["cache_dir"] == mounts["cache"]["mountPath"]
    (tmp_path / "key").write_text("a2V5")
    account["account_key_file"] = str(tmp_path / "key")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).settings.metrics_address is not None


def test_the_pod_has_a_privileged_sidecar_and_an_unprivileged_app(tmp_path):
    docs = documents("pod.yaml")
    spec = docs["Pod"]["spec"]
    _check_sidecar(docs, spec, "shared", tmp_path)
    app = spec["containers"][1]
    assert not app.get("securityContext", {}).get("privileged")
    assert "SYS_ADMIN" not in str(app)
    assert _mounts(app)["shared"]["mountPropagation"] == "HostToContainer"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == (
        docs["PersistentVolumeClaim"]["metadata"]["name"])


def test_the_daemonset_mounts_on_the_node(tmp_path):
    docs = documents("daemonset.yaml")
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    _check_sidecar(docs, spec, "node-mnt", tmp_path)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["node-mnt"]["hostPath"]["path"] == "/mnt/blobmount"
    assert "hostPath" in volumes["cache"]  # the journal outlives the pod, on the node
    reader = docs["Pod"]["spec"]
    assert _mounts(reader["containers"][0])["node-mnt"]["mountPropagation"] == (
        "HostToContainer")
    assert reader["volumes"][0]["hostPath"]["path"] == "/mnt/blobmount"
