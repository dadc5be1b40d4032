"""The ops page: live campaigns, the grant pipeline (backlog, dead letters), jobs and wallets,
behind an operator key. Framework-neutral: :class:`OpsPage` turns an :class:`OpsRequest` into
an :class:`OpsResponse`; couponcore.fastapi (``create_app(engine, operator_key=...)``) and
couponcore.django (``path("ops/", include("couponcore.django.ops"))``) serve it. See
docs/ops-page.md.
"""

from .page import (
    ENV_OPERATOR_KEY,
    FORM_BYTES_MAX,
    OpsPage,
    OpsRequest,
    OpsResponse,
    check_operator_key,
    operator_key_from_env,
    read_operator_key_file,
)

__all__ = [
    "ENV_OPERATOR_KEY",
    "FORM_BYTES_MAX",
    "OpsPage",
    "OpsRequest",
    "OpsResponse",
    "check_operator_key",
    "operator_key_from_env",
    "read_operator_key_file",
]
