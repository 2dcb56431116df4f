"""The worker's Schema Registry client: writer schemas by id, secrets from the environment.

``RegistryLookup`` wraps ``confluent_kafka.schema_registry.SchemaRegistryClient`` as the
``lookup`` of a ``schemas.wireformat.FramedDecoder``: one HTTP request per schema id the
process has not seen (the client and the decoder both cache; ids never change meaning),
and the registry's failures translated at this boundary:

- HTTP 404 (no such id) -> ``UnknownSchemaId``: the payload's fault, one
  ``unknown_schema_id`` rejection per payload (dead letters keep the original bytes);
- anything else (connection refused, timeout, TLS, 401/403, 5xx after the client's own
  retries) -> ``SchemaRegistryUnavailable`` (``retriable = True``): not the events'
  fault. ``FramedDecoder.decode_batch`` lets it propagate with nothing rejected; the
  worker must not dead-letter the batch but retry it (keep the offsets, back off,
  report not-ready) until the registry answers.

Settings: non-secret client settings (``url``, ``ssl.ca.location``,
``ssl.certificate.location``, ``ssl.key.location``, ``timeout``, ``max.retries``, any
other key the client knows) pass through from the pipeline file; secrets come only from
the environment: ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (``user:password``) and
``SCHEMA_REGISTRY_SSL_KEY_PASSWORD``. ``SCHEMA_REGISTRY_URL`` supplies the URL when the
settings do not. A secret written in the settings is a ``ConfigError``.

The client library (the ``registry`` extra) is imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from schemas.errors import ConfigError, MissingExtraError, missing_extra
from schemas.wireformat import (
    FramedDecoder,
    SchemaRegistryUnavailable,
    UnknownSchemaId,
    WriterSchema,
)

__all__ = [
    "ENV_BASIC_AUTH",
    "ENV_SSL_KEY_PASSWORD",
    "ENV_URL",
    "RegistryLookup",
    "client_config",
    "framed_decoder",
]

ENV_URL = "SCHEMA_REGISTRY_URL"
ENV_BASIC_AUTH = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
ENV_SSL_KEY_PASSWORD = "SCHEMA_REGISTRY_SSL_KEY_PASSWORD"  # noqa: S105 - a variable's name
_SECRET_KEYS = {"basic.auth.user.info": ENV_BASIC_AUTH,
                "ssl.key.password": ENV_SSL_KEY_PASSWORD,
                "bearer.auth.token": None}
# A worker blocks on a lookup: fail over to "unavailable" (and a batch retry) in seconds,
# not after the client's default back-off schedule.
_DEFAULTS: dict[str, Any] = {"timeout": 10, "max.retries": 2, "retries.wait.ms": 200}


def client_config(settings: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration: settings, then secrets from the env."""
    env = os.environ if environ is None else environ
    conf: dict[str, Any] = {**_DEFAULTS, **(settings or {})}
    for key, var in _SECRET_KEYS.items():
        if key in (settings or {}):
            where = f"set {var} instead" if var else "not supported"
            raise ConfigError(f"schema registry setting {key!r} is a secret: {where}")
    if not conf.get("url"):
        conf["url"] = env.get(ENV_URL, "").strip()
    if not conf["url"]:
        raise ConfigError(f"no schema registry URL: set {ENV_URL} or the pipeline's "
                          "schema registry 'url'")
    user_info = env.get(ENV_BASIC_AUTH, "")
    if user_info:
        if ":" not in user_info:
            raise ConfigError(f"{ENV_BASIC_AUTH} must be 'user:password'")
        conf["basic.auth.user.info"] = user_info
    key_password = env.get(ENV_SSL_KEY_PASSWORD, "")
    if key_password:
        conf["ssl.key.password"] = key_password
    return conf


def _registry_module() -> Any:
    try:
        from confluent_kafka import schema_registry
    except ModuleNotFoundError as exc:
        raise (missing_extra(exc) or MissingExtraError(
            f"the schema registry client needs {exc.name}: "
            "pip install 'streamscore[registry]'")) from None
    return schema_registry


class RegistryLookup:
    """``schema id -> WriterSchema`` over a Schema Registry (a ``FramedDecoder`` lookup)."""

    def __init__(self, settings: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._conf = client_config(settings, environ)
        self.url = self._conf["url"]
        module = _registry_module()
        try:
            self._client = module.SchemaRegistryClient(self._conf)
        except (ValueError, TypeError) as exc:  # the client validates its settings so
            raise ConfigError(f"schema registry settings: {exc}") from None
        self._error = module.SchemaRegistryError
        self._serialized: Any = None  # a second client for format=serialized lookups

    def __call__(self, schema_id: int) -> WriterSchema:
        """The writer schema of ``schema_id``; see the module docstring for the errors."""
        schema = self._get(self._client, schema_id)
        kind = (schema.schema_type or "AVRO").upper()
        if kind == "PROTOBUF":
            # The decoder reads Protobuf with the file descriptor, which the registry
            # gives as format=serialized. The client caches by id whatever format it
            # fetched first, so that format gets a client (and cache) of its own.
            if self._serialized is None:
                self._serialized = _registry_module().SchemaRegistryClient(self._conf)
            schema = self._get(self._serialized, schema_id, fmt="serialized")
        return WriterSchema(schema_id, kind, schema.schema_str,
                            tuple(ref.name for ref in schema.references or ()))

    def _get(self, client: Any, schema_id: int, fmt: str | None = None) -> Any:
        try:
            return client.get_schema(schema_id, fmt=fmt)
        except self._error as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaId(f"schema id {schema_id} is not in the registry") from None
            raise self._unavailable(exc) from None
        except Exception as exc:  # httpx transport errors after the client's retries
            raise self._unavailable(exc) from None

    def register(self, subject: str, schema_text: str, kind: str = "AVRO") -> int:
        """Register ``schema_text`` under ``subject`` (an output topic's); its id."""
        module = _registry_module()
        try:
            return int(self._client.register_schema(
                subject, module.Schema(schema_text, schema_type=kind)))
        except self._error as exc:
            if 400 <= exc.http_status_code < 500 and exc.http_status_code not in (401, 403):
                raise ConfigError(f"schema registry refused {subject!r}: {exc}") from None
            raise self._unavailable(exc) from None
        except Exception as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> SchemaRegistryUnavailable:
        text = str(exc) or type(exc).__name__
        return SchemaRegistryUnavailable(f"schema registry at {self.url}: {text}"[:500])


def framed_decoder(name: str, settings: Mapping[str, Any] | None = None, *,
                   reader_schema: Mapping[str, Any] | str | None = None,
                   environ: Mapping[str, str] | None = None, **options: Any
                   ) -> FramedDecoder:
    """A ``FramedDecoder`` for the Struct ``name`` over the registry of ``settings``."""
    return FramedDecoder(name, RegistryLookup(settings, environ),
                         reader_schema=reader_schema, **options)
