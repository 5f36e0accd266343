"""What of a consumer may be shown outside the data plane's snapshot and the export (ARCHITECTURE §11).

Key hashes and password hashes are credential material: they never appear in an API read, the audit
log, a revision's shown changes or a diff. A credential is shown by what names it instead: a key by
its label, a basic-auth credential by its username. JWT credentials hold no secret (a symmetric
secret is an `{env: NAME}` reference, an asymmetric one a public key), so they are shown whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def public_consumer(document: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical consumer without hashes: keys as `{label}`, basic-auth credentials as `{username}`."""
    shown = dict(document)
    if "key_auth" in shown:
        shown["key_auth"] = [{"label": credential["label"]} for credential in shown["key_auth"]]
    if "basic_auth" in shown:
        shown["basic_auth"] = [{"username": credential["username"]} for credential in shown["basic_auth"]]
    return shown


def public_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A whole canonical document with every consumer as `public_consumer` shows it."""
    if not document.get("consumers"):
        return dict(document)
    return {**document, "consumers": [public_consumer(consumer) for consumer in document["consumers"]]}
