"""The whole-path tests run Conduit's processes the way the ingress's fault tests do."""

from tests.ingress.conftest import private_redis, stack  # noqa: F401  (fixtures)
