"""Test-side view of a cluster: make namespaces, Secrets and SimacanCredentials; read what users see."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localenv.polling import eventually
from simacan_token_operator.model.spec import GROUP as GROUP
from simacan_token_operator.model.spec import PLURAL as PLURAL
from simacan_token_operator.model.spec import VERSION as VERSION


def api_client(kubeconfig: Path, pool_size: int | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


@dataclass
class Namespace:
    """One test's namespace, with shortcuts that return plain dicts."""

    api: client.ApiClient
    name: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @classmethod
    def create(cls, api: client.ApiClient, prefix: str = "t") -> Namespace:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        body: Any = {"metadata": {"name": name}}
        client.CoreV1Api(api).create_namespace(body)
        return cls(api, name)

    # -- Secrets ---------------------------------------------------------------------------------

    def create_secret(self, name: str, **string_data: str) -> dict[str, Any]:
        body: Any = {"metadata": {"name": name}, "type": "Opaque", "stringData": string_data}
        return self._dict(self.core.create_namespaced_secret(self.name, body))

    def create_login_secret(self, name: str, username: str, password: str) -> dict[str, Any]:
        return self.create_secret(name, username=username, password=password)

    def set_secret_data(self, name: str, **values: str) -> None:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        self.core.patch_namespaced_secret(name, self.name, {"data": data})

    def secret(self, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self.core.read_namespaced_secret(name, self.name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def secret_text(self, name: str, key: str) -> str | None:
        secret = self.secret(name)
        if secret is None or key not in (secret.get("data") or {}):
            return None
        return base64.b64decode(secret["data"][key]).decode()

    def delete_secret(self, name: str) -> None:
        self.core.delete_namespaced_secret(name, self.name)

    # -- Pods ------------------------------------------------------------------------------------

    def create_pod(self, manifest: Mapping[str, Any]) -> None:
        """Retried while the namespace's default ServiceAccount, which admission requires, is being made."""
        body: Any = manifest

        def create() -> bool:
            try:
                self.core.create_namespaced_pod(self.name, body)
            except ApiException as error:
                if error.status == 403 and "serviceaccount" in str(error.body):
                    return False
                raise
            return True

        eventually(create, timeout=30, what=f"pod {manifest['metadata']['name']} created")

    # -- SimacanCredentials ----------------------------------------------------------------------

    def create_credential(
        self, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SimacanCredential",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
            "spec": dict(spec),
        }
        created = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, body)
        return self._dict(created)

    def credential(self, name: str) -> dict[str, Any]:
        return self._dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, name))

    def patch_credential(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        result = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.name, PLURAL, name, dict(patch)
        )
        return self._dict(result)

    def delete_credential(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, name)

    def ready(self, name: str) -> dict[str, Any] | None:
        """The Ready condition, or None before the operator has written one."""
        status = self.credential(name).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Ready":
                return dict(condition)
        return None

    def ready_token(self, name: str) -> str:
        """The token once the credential is Ready, failing with the status seen so far."""
        eventually(lambda: self.ready_reason(name) == ("True", "TokenValid"), what=f"{name} Ready")
        token = self.secret_text(name, "token")
        assert token
        return token

    def ready_reason(self, name: str) -> tuple[str, str] | None:
        condition = self.ready(name)
        return (condition["status"], condition["reason"]) if condition else None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        items = self._dict(self.core.list_namespaced_event(self.name)).get("items") or []
        return [e for e in items if name is None or (e.get("involvedObject") or {}).get("name") == name]

    def event_reasons(self, name: str) -> list[str]:
        return [str(e.get("reason")) for e in self.events(name)]

    def _dict(self, obj: Any) -> dict[str, Any]:
        result = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        assert isinstance(result, dict)
        return result
