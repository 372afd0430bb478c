"""The Kubernetes launcher: one Job per worker, through the official client.

The Job runs the pool's ``image`` with the module list as the container's arguments
and the worker environment; it is never restarted or retried (``restartPolicy: Never``,
``backoffLimit: 0``) and is cleaned up five minutes after it ends
(``ttlSecondsAfterFinished: 300``). With ``apiServer`` the launcher talks to that
server (bearer ``token``, ``caCert`` or ``insecure``); without it, it uses the
in-cluster service account, else the local kubeconfig. Calls run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config  # type: ignore[import-untyped]
from kubernetes.client.rest import ApiException  # type: ignore[import-untyped]
from kubernetes.config.config_exception import ConfigException  # type: ignore[import-untyped]

from pycoflux.server.launchers import LaunchRequest, PollResult, tail

TTL_AFTER_FINISHED = 300
POD_FIELDS = {
    "nodeSelector": "nodeSelector",
    "tolerations": "tolerations",
    "hostAliases": "hostAliases",
    "volumes": "volumes",
    "serviceAccount": "serviceAccountName",
}


def job_name(worker_id: str) -> str:
    return f"coflux-worker-{worker_id}"


def job_manifest(request: LaunchRequest) -> dict[str, Any]:
    """The Job that runs one worker."""
    launcher = request.launcher
    name = job_name(request.worker_id)
    labels = {
        **(launcher.get("labels") or {}),
        "app.kubernetes.io/managed-by": "coflux",
        "coflux.io/worker": request.worker_id,
    }
    container: dict[str, Any] = {
        "name": "worker",
        "image": launcher["image"],
        "args": list(request.modules),
        "env": [{"name": key, "value": value} for key, value in request.env.items()],
    }
    for key in ("imagePullPolicy", "resources", "volumeMounts"):
        if launcher.get(key) is not None:
            container[key] = launcher[key]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    for key, field in POD_FIELDS.items():
        if launcher.get(key) is not None:
            pod_spec[field] = launcher[key]
    if launcher.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = [{"name": s} for s in launcher["imagePullSecrets"]]
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if launcher.get("annotations"):
        metadata["annotations"] = dict(launcher["annotations"])
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if launcher.get("activeDeadlineSeconds") is not None:
        spec["activeDeadlineSeconds"] = launcher["activeDeadlineSeconds"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


@contextlib.contextmanager
def _api(launcher: dict[str, Any]) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    ca_file: str | None = None
    if launcher.get("apiServer"):
        configuration.host = str(launcher["apiServer"]).rstrip("/")
        if launcher.get("token"):
            configuration.api_key = {"authorization": str(launcher["token"])}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        if launcher.get("insecure"):
            configuration.verify_ssl = False
        elif launcher.get("caCert"):
            with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as handle:
                handle.write(str(launcher["caCert"]))
                ca_file = handle.name
            configuration.ssl_ca_cert = ca_file
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            config.load_kube_config(client_configuration=configuration)
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()
        if ca_file is not None:
            os.unlink(ca_file)


def _namespace(launcher: dict[str, Any]) -> str:
    return str(launcher.get("namespace") or "default")


class KubernetesLauncher:
    def __init__(self) -> None:
        self._stopped: set[str] = set()

    async def launch(self, request: LaunchRequest) -> dict[str, Any]:
        return await asyncio.to_thread(self._launch, request)

    def _launch(self, request: LaunchRequest) -> dict[str, Any]:
        namespace = _namespace(request.launcher)
        with _api(request.launcher) as api:
            client.BatchV1Api(api).create_namespaced_job(namespace, job_manifest(request))
        return {"namespace": namespace, "job": job_name(request.worker_id)}

    async def poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult:
        return await asyncio.to_thread(self._poll, launcher, data)

    def _poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult:
        namespace, name = str(data["namespace"]), str(data["job"])
        with _api(launcher) as api:
            try:
                job = client.BatchV1Api(api).read_namespaced_job_status(name, namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
                lost = name not in self._stopped
                return PollResult(running=False, error="process_lost" if lost else None)
            status = job.status
            if not (status and (status.succeeded or status.failed)):
                return PollResult(running=True)
            core = client.CoreV1Api(api)
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
            error = None
            logs = None
            if status.failed:
                error = "exit_code:1"
            for pod in pods:
                for container in (pod.status and pod.status.container_statuses) or []:
                    terminated = container.state and container.state.terminated
                    if terminated is None:
                        continue
                    if terminated.reason == "OOMKilled":
                        error = "oom_killed"
                    elif terminated.exit_code:
                        error = f"exit_code:{terminated.exit_code}"
                with contextlib.suppress(ApiException):
                    # Raw: the client would otherwise hand back the repr of the bytes.
                    response = core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, tail_lines=20, _preload_content=False
                    )
                    logs = tail(response.data.decode(errors="replace"))
            self._stopped.discard(name)
            return PollResult(running=False, error=error, logs=logs)

    async def stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None:
        await asyncio.to_thread(self._stop, launcher, data)

    def _stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None:
        namespace, name = str(data["namespace"]), str(data["job"])
        with _api(launcher) as api:
            try:
                client.BatchV1Api(api).delete_namespaced_job(
                    name, namespace, propagation_policy="Background"
                )
            except ApiException as e:
                if e.status != 404:
                    raise
            self._stopped.add(name)
