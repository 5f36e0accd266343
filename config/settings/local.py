"""Local and embedded run: the README's command. Loopback only, development keys if none given."""

from .base import *  # noqa: F403
from .base import JWT_SIGNING_KEY, SECRET_KEY, SIMPLE_JWT, VAR_DIR, env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)

# Development-only keys, used only when the environment gives none. production.py refuses to start
# without real ones.
SECRET_KEY = SECRET_KEY or "local-only-insecure-secret-key-do-not-use-in-production-0123456789"
SIMPLE_JWT["SIGNING_KEY"] = JWT_SIGNING_KEY or "local-only-insecure-jwt-signing-key-0123456789-abcdefghij"

VAR_DIR.mkdir(parents=True, exist_ok=True)

# Static files (the admin's CSS, the API docs' JS) straight from the apps: no collectstatic needed.
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = True
