"""Keys and tokens for the `jwt` plugin's tests (in-process and e2e)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HS_SECRET = "hs256-test-secret-0123456789abcdef-long-enough"  # the environment's value
HS_ENV = "GW_TEST_JWT_SECRET"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def public_pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwt_credentials() -> list[dict[str, Any]]:
    """Alice's credentials: one per algorithm family, each its own issuer."""
    return [
        {"issuer": "mobile", "algorithm": "HS256", "secret": {"env": HS_ENV}},
        {"issuer": "partner-idp", "algorithm": "RS256", "public_key": public_pem(RSA_KEY)},
        {"issuer": "ec-idp", "algorithm": "ES256", "public_key": public_pem(EC_KEY)},
        {"issuer": "ed-idp", "algorithm": "EdDSA", "public_key": public_pem(ED_KEY)},
    ]


def token(
    issuer: str = "partner-idp",
    *,
    key: Any = None,
    algorithm: str = "RS256",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"iss": issuer, "exp": int(time.time()) + 300, "sub": "user-1", **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key if key is not None else RSA_KEY, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: `alg: none` (secret None: no signature) or HS256 signed with
    any bytes (the RS256 → HS256 switch signs with the public key's PEM)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tampered(good: str, **claims: Any) -> str:
    """`good` with its payload replaced (the signature left as it was)."""
    header, payload, signature = good.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


def jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of `private` (as an OIDC provider publishes it)."""
    data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {**data, "kid": kid, "use": "sig", **extra}
