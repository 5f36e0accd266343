"""Writes to consumers and their credentials. Each runs in core.revisions.config_write: one revision, audited
(the audit events show consumers without hashes, core.revisions.audit_view).

Secrets never reach the database (ARCHITECTURE §11): a key is generated here, stored as its sha256 and
answered once; a basic-auth password given in clear is stored as a PBKDF2 hash; a JWT secret is an
`{env: NAME}` reference. What selects a consumer at request time (a key hash, a JWT issuer, a basic-auth
username, a custom_id) is claimed in ConsumerIdentity, unique in the database, so two writers can never
both hold one.

Keys are not part of a consumer's write body: `key_auth` is kept as it is by create/update and changes
only through `consumer_key_create` / `consumer_key_delete` (and import_config, which carries hashes).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from configdoc import Problem, canonical_json
from configdoc.consumers import KEY_AUTH_CREDENTIAL_FIELDS, hash_key, make_password_hash, normalize_consumers
from configdoc.plugins import ANONYMOUS_PLUGINS
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError, ConflictError, NotFoundError
from controlplane.core.revisions import CONSUMER, ChangeSet, check_if_match, config_write

from .models import Consumer, ConsumerIdentity, IdentityKind

# The longest password taken in clear: long passphrases fit, a megabyte body is not hashed.
MAX_PASSWORD = 1024
_LOCAL = "consumers[0]"


def _local(path: str) -> str:
    """A problem's path relative to the one consumer being written (`key_auth[0].label`)."""
    if path.startswith(_LOCAL + "."):
        return path[len(_LOCAL) + 1 :]
    return "" if path == _LOCAL else path


def normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    """One consumer in configdoc's canonical form, or ConfigValidationError naming every field."""
    problems: list[Problem] = []
    result = normalize_consumers([data], "consumers", problems)
    if problems or not result:
        raise ConfigValidationError([Problem(_local(p.path), p.message) for p in problems])
    return result[0]


def _password_hash(password: str) -> str:
    return make_password_hash(
        password, salt=secrets.token_urlsafe(16), iterations=settings.GATEWAY_BASIC_AUTH_ITERATIONS
    )


def _hash_passwords(data: dict[str, Any], current: Mapping[str, Any] | None, *, complete: bool = True) -> None:
    """Basic-auth credentials given with a clear `password` get its hash; one given by username alone
    keeps the hash it has (so a representation, which never shows hashes, can be written back). With
    `complete=False` the latter are left for a later call (see `_hashed_early`)."""
    credentials = data.get("basic_auth")
    if not isinstance(credentials, list):
        return
    known = {c["username"]: c["password_hash"] for c in (current or {}).get("basic_auth", [])}
    problems: list[Problem] = []
    hashed: list[Any] = []
    for index, credential in enumerate(credentials):
        if not isinstance(credential, Mapping):
            hashed.append(credential)
            continue
        credential = dict(credential)
        where = f"basic_auth[{index}]"
        if "password" in credential:
            password = credential.pop("password")
            # The password is never repeated in a message.
            if not isinstance(password, str):
                problems.append(Problem(f"{where}.password", "must be a string"))
            elif not 1 <= len(password) <= MAX_PASSWORD:
                problems.append(Problem(f"{where}.password", f"must be 1-{MAX_PASSWORD} characters"))
            elif "\x00" in password:
                problems.append(Problem(f"{where}.password", "must not contain NUL characters"))
            else:
                try:
                    credential["password_hash"] = _password_hash(password)
                except UnicodeEncodeError:
                    problems.append(Problem(f"{where}.password", "must be valid Unicode text"))
        elif "password_hash" not in credential and complete:
            username = credential.get("username")
            if isinstance(username, str) and username in known:
                credential["password_hash"] = known[username]
            else:
                problems.append(Problem(f"{where}.password", "is required for a new basic-auth credential"))
        hashed.append(credential)
    if problems:
        raise ConfigValidationError(problems)
    data["basic_auth"] = hashed


def _hashed_early(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` with its clear passwords hashed, before the write takes the config lock: PBKDF2 costs up to
    a second, and every config write waits while the lock is held."""
    if not isinstance(data, Mapping) or not isinstance(data.get("basic_auth"), list):
        return data
    early = dict(data)
    _hash_passwords(early, None, complete=False)
    return early


def _prepare(data: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The canonical consumer a create/update writes: passwords hashed, keys kept from `current`."""
    if not isinstance(data, Mapping):
        raise ConfigValidationError([Problem("", "a consumer must be a mapping")])
    merged = {key: value for key, value in data.items() if key != "key_auth"}
    _hash_passwords(merged, current)
    keys = (current or {}).get("key_auth")
    if keys:
        merged["key_auth"] = keys
    return normalize(merged)


def apply(consumer: Consumer, document: dict[str, Any]) -> None:
    consumer.username = document["username"]
    consumer.custom_id = document.get("custom_id") or ""
    consumer.groups = document.get("groups", [])
    consumer.document = document
    consumer.canonical = canonical_json(document).decode("utf-8")


def identities(document: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """What selects this consumer, `(kind, value) -> the field path holding it`."""
    out: dict[tuple[str, str], str] = {}
    if document.get("custom_id") is not None:
        out[(IdentityKind.CUSTOM_ID, document["custom_id"])] = "custom_id"
    for index, credential in enumerate(document.get("key_auth", [])):
        out[(IdentityKind.KEY_SHA256, credential["key_sha256"])] = f"key_auth[{index}].key_sha256"
    for index, credential in enumerate(document.get("jwt", [])):
        out[(IdentityKind.JWT_ISSUER, credential["issuer"])] = f"jwt[{index}].issuer"
    for index, credential in enumerate(document.get("basic_auth", [])):
        out[(IdentityKind.BASIC_USERNAME, credential["username"])] = f"basic_auth[{index}].username"
    return out


def _clash_message(kind: str, value: str, holder: str) -> str:
    if kind == IdentityKind.KEY_SHA256:  # the hash is not repeated
        return f"this key hash must identify one consumer's credential; it is also used by consumer {holder!r}"
    what = {
        IdentityKind.CUSTOM_ID: "custom_id",
        IdentityKind.JWT_ISSUER: "issuer",
        IdentityKind.BASIC_USERNAME: "basic-auth username",
    }[IdentityKind(kind)]
    return f"{what} {value!r} must identify one consumer; it is also used by consumer {holder!r}"


def claim_identities(consumers: Iterable[Consumer]) -> None:
    """Make ConsumerIdentity hold exactly what `consumers` (saved rows) claim, refusing values another
    consumer holds (400 naming the field). The database constraint backs the check: a value claimed by
    a write that committed meanwhile ends in 409 `conflict`, never a 500."""
    consumers = list({c.pk: c for c in consumers}.values())
    wanted: dict[tuple[str, str], tuple[Consumer, str]] = {}
    problems: list[Problem] = []
    for consumer in consumers:
        for identity, where in identities(consumer.document).items():
            holder = wanted.setdefault(identity, (consumer, where))[0]
            if holder.pk != consumer.pk:
                problems.append(Problem(where, _clash_message(*identity, holder.username)))
    if wanted:
        query = Q()
        for kind, value in wanted:
            query |= Q(kind=kind, value=value)
        clashes = ConsumerIdentity.objects.filter(query).exclude(consumer__in=consumers).select_related("consumer")
        for clash in clashes:
            consumer, where = wanted[(clash.kind, clash.value)]
            problems.append(Problem(where, _clash_message(clash.kind, clash.value, clash.consumer.username)))
    if problems:
        raise ConfigValidationError(problems)
    try:
        with transaction.atomic():
            ConsumerIdentity.objects.filter(consumer__in=consumers).delete()
            ConsumerIdentity.objects.bulk_create(
                ConsumerIdentity(consumer=consumer, kind=kind, value=value)
                for (kind, value), (consumer, _) in wanted.items()
            )
    except IntegrityError:
        raise ConflictError("a credential or custom_id of this consumer was just claimed by another write") from None


def _locked(consumer: Consumer) -> Consumer:
    """`consumer`'s row, locked and fresh; NotFoundError when a write that committed since it was read
    deleted it."""
    locked = Consumer.objects.select_for_update().filter(pk=consumer.pk, username=consumer.username).first()
    if locked is None:
        raise NotFoundError(f"consumer {consumer.username} does not exist")
    return locked


def anonymous_references(username: str) -> list[str]:
    """Where the document names `username` as an authentication plugin's `anonymous` consumer."""
    from controlplane.routing.models import Endpoint
    from controlplane.snapshots.models import DocumentDefaults

    found: list[str] = []

    def scan(plugins: Mapping[str, Any] | None, where: str) -> None:
        for name in ANONYMOUS_PLUGINS:
            config = (plugins or {}).get(name) or {}
            if config.get("anonymous") == username:
                found.append(f"{where}.{name}.anonymous")

    row = DocumentDefaults.objects.filter(pk=1).values_list("plugins", flat=True).first()
    scan(row, "plugins")
    for name, version, plugins in Endpoint.objects.exclude(plugins={}).values_list("name", "version", "plugins"):
        scan(plugins, f"endpoint {name}:{version} plugins")
    return found


def check_anonymous(plugins: Mapping[str, Any] | None, where: str) -> None:
    """Refuse plugins whose `anonymous` names no consumer: the document would name a consumer it does not
    hold, and every data plane would refuse it (configdoc.validate_document). Run under the config lock,
    so a consumer cannot be deleted between this check and the write."""
    problems = []
    for name in ANONYMOUS_PLUGINS:
        anonymous = ((plugins or {}).get(name) or {}).get("anonymous")
        if anonymous is not None and not Consumer.objects.filter(username=anonymous).exists():
            problems.append(Problem(f"{where}.{name}.anonymous", f"names no consumer: {anonymous!r} does not exist"))
    if problems:
        raise ConfigValidationError(problems)


def _save(consumer: Consumer, document: dict[str, Any], changes: ChangeSet, before: dict[str, Any] | None) -> None:
    apply(consumer, document)
    try:
        with transaction.atomic():
            consumer.save()
    except IntegrityError:
        raise ConflictError(f"consumer {document['username']} already exists") from None
    claim_identities([consumer])
    changes.record(CONSUMER, consumer.username, before=before, after=document)


# --- consumers ----------------------------------------------------------------------------------------


def consumer_create(*, data: Mapping[str, Any], actor: Actor, request_id: str = "") -> Consumer:
    document = _prepare(_hashed_early(data), None)
    username = document["username"]
    with config_write(actor=actor, summary=f"create consumer {username}", request_id=request_id) as changes:
        if Consumer.objects.filter(username=username).exists():
            raise ConflictError(f"consumer {username} already exists")
        consumer = Consumer()
        _save(consumer, document, changes, None)
    return consumer


def consumer_update(
    *,
    consumer: Consumer,
    data: Mapping[str, Any],
    actor: Actor,
    partial: bool = False,
    request_id: str = "",
    if_match: str | None = None,
) -> Consumer:
    """Replace (PUT) or merge into (PATCH, top-level keys) a consumer. `key_auth` is kept (keys change
    through consumer_key_*); a PUT names the consumer (`username`, as it is); `basic_auth` and `jwt`
    given replace the set (a basic-auth credential given
    by username alone keeps its password). The username cannot change: it is what the document's
    `anonymous` settings and the upstreams' X-Consumer-Username name."""
    if not isinstance(data, Mapping):
        raise ConfigValidationError([Problem("", "a consumer must be a mapping")])
    data = _hashed_early(data)
    with config_write(actor=actor, summary=f"update consumer {consumer.username}", request_id=request_id) as changes:
        consumer = _locked(consumer)
        check_if_match(consumer.canonical, if_match)
        before = consumer.document
        merged = {**public_input(before), **data} if partial else dict(data)
        if "username" not in merged:  # a PUT is the whole object, named like a POST
            raise ConfigValidationError([Problem("username", "is required")])
        if merged["username"] != consumer.username:
            raise ConfigValidationError(
                [Problem("username", "cannot change: create a consumer with the new username instead")]
            )
        document = _prepare(merged, before)
        _save(consumer, document, changes, before)
    return consumer


def public_input(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored consumer as a write body that keeps it as it is (basic-auth credentials by username)."""
    body = {key: value for key, value in document.items() if key != "key_auth"}
    if "basic_auth" in body:
        body["basic_auth"] = [{"username": c["username"]} for c in body["basic_auth"]]
    return body


def consumer_delete(*, consumer: Consumer, actor: Actor, request_id: str = "", if_match: str | None = None) -> None:
    with config_write(actor=actor, summary=f"delete consumer {consumer.username}", request_id=request_id) as changes:
        consumer = _locked(consumer)
        check_if_match(consumer.canonical, if_match)
        references = anonymous_references(consumer.username)
        if references:
            raise ConflictError(
                f"consumer {consumer.username} is the anonymous consumer of {', '.join(references)}: change that first"
            )
        changes.record(CONSUMER, consumer.username, before=consumer.document, after=None)
        consumer.delete()


# --- keys ---------------------------------------------------------------------------------------------

_LABEL = KEY_AUTH_CREDENTIAL_FIELDS["label"]


def _label_problem(label: Any) -> str | None:
    if not isinstance(label, str):
        return "must be a string"
    if _LABEL.max_length is not None and len(label) > _LABEL.max_length:
        return f"must be at most {_LABEL.max_length} characters"
    if _LABEL.pattern is not None and not _LABEL.pattern.match(label):
        return f"must be {_LABEL.pattern_help}"
    return None


def _default_label(taken: set[str]) -> str:
    base = "key-" + datetime.now(UTC).strftime("%Y%m%d")
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}-{n}"
    return label


def consumer_key_create(
    *, consumer: Consumer, label: str | None = None, actor: Actor, request_id: str = ""
) -> tuple[Consumer, str, str]:
    """Generate an API key for `consumer`: answers (consumer, label, key). The key exists only in this
    answer; the database, the revision and the snapshot hold its sha256."""
    if label is not None:
        problem = _label_problem(label)
        if problem:
            raise ConfigValidationError([Problem("label", problem)])
    key = secrets.token_urlsafe(32)
    with config_write(actor=actor, summary=f"issue a key for consumer {consumer.username}", request_id=request_id) as (
        changes
    ):
        consumer = _locked(consumer)
        before = consumer.document
        keys = list(before.get("key_auth", []))
        taken = {c["label"] for c in keys}
        label = label if label is not None else _default_label(taken)
        if label in taken:
            raise ConflictError(f"consumer {consumer.username} already has a key labelled {label!r}")
        keys.append({"label": label, "key_sha256": hash_key(key)})
        document = normalize({**before, "key_auth": keys})
        _save(consumer, document, changes, before)
    return consumer, label, key


def consumer_key_delete(*, consumer: Consumer, label: str, actor: Actor, request_id: str = "") -> Consumer:
    with config_write(
        actor=actor, summary=f"delete key {label} of consumer {consumer.username}", request_id=request_id
    ) as changes:
        consumer = _locked(consumer)
        before = consumer.document
        keys = [c for c in before.get("key_auth", []) if c["label"] != label]
        if len(keys) == len(before.get("key_auth", [])):
            raise NotFoundError(f"consumer {consumer.username} has no key labelled {label!r}")
        document = normalize({**before, "key_auth": keys})
        _save(consumer, document, changes, before)
    return consumer
