"""AWS access: the process's S3 client, botocore's retries, what an AWS error means (a message
naming what to fix), and credentials never shown (`redact`, `safe_cause`).

boto3 and botocore are imported when a client is made or an error is explained, not with this
module: a run over a local landing zone with nothing new never loads them."""

import functools
import os
import threading
from collections.abc import Iterator

DEFAULT_REGION = "us-east-1"
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 10
"""botocore's attempts per request (the first one included), unless AWS_MAX_ATTEMPTS is set."""

# AWS error codes, grouped by what the user has to fix (S3 and Glue spell them differently).
NO_CREDENTIALS = "NoCredentials"
BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
}
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "403", "Forbidden"}
NO_SUCH_BUCKET = {"NoSuchBucket"}
GONE = {"NoSuchKey", "404", "NotFound"}
CHANGED = {"PreconditionFailed", "412", "InvalidRange", "416"}
THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}
CREDENTIALS_HINT = (
    "provide them through the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID + "
    "AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN], or an IAM role such as IRSA)"
)


def aws_error_code(error: BaseException) -> str | None:
    """The AWS error code behind an exception, wrapped or not (s3fs turns them into OSErrors)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return NO_CREDENTIALS
        if isinstance(error, ClientError):
            return str(error.response.get("Error", {}).get("Code") or "")
        error = error.__cause__ or error.__context__
    return None


def endpoint_note(service: str) -> str:
    """Where requests went, when an `AWS_ENDPOINT_URL*` variable redirects them."""
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service}") or os.environ.get("AWS_ENDPOINT_URL")
    return f" (endpoint {endpoint})" if endpoint else ""


def explain_s3_error(error: BaseException, url: str, doing: str, needs: str) -> str | None:
    """A message naming what to fix for an S3 failure, or None when it is not an AWS one."""
    code = aws_error_code(error)
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    where = f"{doing} {url}{endpoint_note('S3')}"
    if code == NO_CREDENTIALS:
        return f"no AWS credentials found {where}: {CREDENTIALS_HINT}."
    if code in BAD_CREDENTIALS:
        return (
            f"AWS rejected the credentials ({code}) {where}: check AWS_PROFILE / "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (expired?)."
        )
    if code in ACCESS_DENIED:
        return f"access denied ({code}) {where}: the AWS identity needs {needs} on s3://{bucket}."
    if code in NO_SUCH_BUCKET:
        return f"the bucket s3://{bucket} does not exist ({doing} {url}{endpoint_note('S3')})."
    return None


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def retry_policy() -> dict:
    """botocore's retries: AWS_RETRY_MODE / AWS_MAX_ATTEMPTS when set, else adaptive, 10."""
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    return {
        "mode": os.environ.get("AWS_RETRY_MODE", "").strip() or RETRY_MODE,
        # `total_max_attempts` counts the first attempt, as AWS_MAX_ATTEMPTS does.
        "total_max_attempts": int(attempts) if attempts.isdigit() else MAX_ATTEMPTS,
    }


def aws_environment() -> tuple:
    """The AWS settings of this process: what a cached client depends on."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


_CREDENTIALS: list = []
"""The credentials of the S3 clients this process made (from the environment, a profile, a
role...): masked in every message."""

SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def credential_values() -> set[str]:
    """The AWS credential values this process uses (environment, and those its sessions
    resolved, e.g. from a profile), which no message, report or log may show."""
    values = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for credentials in list(_CREDENTIALS):
        try:
            frozen = credentials.get_frozen_credentials()
        except Exception:  # noqa: BLE001 - best effort: the environment's values are masked
            continue
        values |= {frozen.access_key or "", frozen.secret_key or "", frozen.token or ""}
    return {value for value in values if len(value) >= 4}


def redact(text: str) -> str:
    """`text` with every credential value of this process replaced by `***`."""
    for secret in credential_values():
        text = text.replace(secret, "***")
    return text


_RETRYING: dict[int, str] = {}
"""Per thread, the retry its S3 request is waiting for: what the live line shows."""


def s3_retry_note() -> str | None:
    """`S3 not answering (<why>), retry <n>/<retries>` while some request of this process waits
    to be retried, else None."""
    notes = list(_RETRYING.values())
    return notes[-1] if notes else None


def _note_retry(attempts: int = 0, response=None, caught_exception=None, **_) -> None:
    # botocore asks this after every attempt, the successful ones too: only an attempt that
    # will be retried (a connection error, a 5xx, throttling) leaves a note.
    reason = type(caught_exception).__name__ if caught_exception is not None else None
    if reason is None and response is not None:
        status = response[0].status_code
        code = (response[1] or {}).get("Error", {}).get("Code")
        if status >= 500 or code in THROTTLING:
            reason = code or f"HTTP {status}"
    retries = retry_policy()["total_max_attempts"] - 1
    if reason is None or attempts > retries:
        _RETRYING.pop(threading.get_ident(), None)
    else:
        _RETRYING[threading.get_ident()] = (
            f"S3 not answering ({reason}), retry {attempts}/{retries}"
        )


def _request_ended(**_) -> None:
    _RETRYING.pop(threading.get_ident(), None)


def _session_and_region():
    import boto3

    session = boto3.Session()
    return session, session.region_name or DEFAULT_REGION


def _built_once(build):
    """`functools.cache` that builds each value once even when threads ask for it at the same
    time: a client takes ~0.1 s of CPU to build, and a run's listing threads all ask for the
    process's client at their start (each built its own: ~0.1 s per table listed)."""
    cached = functools.cache(build)
    lock = threading.Lock()

    @functools.wraps(build)
    def get(*key):
        with lock:
            return cached(*key)

    return get


@_built_once
def _s3_client(_environment: tuple):
    from botocore.config import Config

    session, region = _session_and_region()
    # Resolved once here (creating the client would do it anyway); None when there are none.
    if (credentials := session.get_credentials()) is not None:
        _CREDENTIALS.append(credentials)
    config = Config(
        retries=retry_policy(),
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
    )
    client = session.client("s3", region_name=region, endpoint_url=s3_endpoint(), config=config)
    client.meta.events.register("needs-retry.s3", _note_retry)
    client.meta.events.register("after-call.s3", _request_ended)
    client.meta.events.register("after-call-error.s3", _request_ended)
    return client


def s3_client():
    """The process's S3 client for the current AWS settings (thread-safe)."""
    return _s3_client(aws_environment())


@_built_once
def _glue_client(_environment: tuple):
    from botocore.config import Config

    session, region = _session_and_region()
    # A client from the session keeps botocore's refreshing credentials (IRSA, assumed roles)
    # and picks AWS_ENDPOINT_URL_GLUE / AWS_ENDPOINT_URL up by itself.
    return session.client(
        "glue", region_name=region, config=Config(retries={"mode": "standard", "max_attempts": 5})
    )


def glue_client():
    """The process's Glue client for the current AWS settings (the lake's catalog)."""
    return _glue_client(aws_environment())


CREDENTIAL_SOURCES = {
    "env": "the environment (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "the shared credentials file",
    "config-file": "the AWS config file",
    "assume-role": "a role assumed by the AWS profile",
    "assume-role-with-web-identity": "a web identity token (IRSA)",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's role",
    "sso": "AWS SSO",
}
"""botocore's names of where credentials came from, as a message says them."""

CHECK_CONNECT_TIMEOUT = 5
CHECK_READ_TIMEOUT = 10


def s3_check_client():
    """A client that tries each request once, with short timeouts (the caller retries: the
    landing zone's check up front, landing/check.py), and where its requests go and with which
    credentials, as `(client, what it tries)`: e.g. `endpoint http://127.0.0.1:9000
    (AWS_ENDPOINT_URL), credentials from env`; never a credential value."""
    from botocore.config import Config

    session, region = _session_and_region()
    credentials = session.get_credentials()
    if credentials is not None:
        _CREDENTIALS.append(credentials)
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=CHECK_CONNECT_TIMEOUT,
        read_timeout=CHECK_READ_TIMEOUT,
    )
    client = session.client("s3", region_name=region, endpoint_url=s3_endpoint(), config=config)
    endpoint_variable = next(
        (name for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if os.environ.get(name)),
        None,
    )
    endpoint = (
        f"endpoint {client.meta.endpoint_url} ({endpoint_variable})"
        if endpoint_variable
        else f"endpoint {client.meta.endpoint_url} (AWS, region {region})"
    )
    if credentials is None:
        source = "no credentials found (environment, AWS_PROFILE, config files, IAM role)"
    else:
        profile = os.environ.get("AWS_PROFILE")
        method = CREDENTIAL_SOURCES.get(credentials.method, credentials.method)
        source = f"credentials from {method}" + (
            f" (AWS_PROFILE={profile})" if profile and credentials.method != "env" else ""
        )
    return client, f"{endpoint}, {source}"


def is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def attach(exception: BaseException, cause: BaseException) -> BaseException:
    """`exception`, with `cause` (scrubbed of credentials) as its cause."""
    exception.__cause__ = safe_cause(cause)
    exception.__suppress_context__ = True
    return exception


def safe_cause(cause: BaseException) -> BaseException:
    """`cause`, to raise from, with every exception of its chain scrubbed IN PLACE of any
    credential value in its text (a verbose server may echo the access key, and dlt's trace
    and tracebacks print the whole chain)."""
    for error in _chain(cause):
        text = str(error)
        if redact(text) == text:
            continue
        if isinstance(error, OSError) and error.strerror:
            error.strerror = redact(str(error.strerror))
            error.args = (error.errno, error.strerror)
        else:
            error.args = (redact(text),)
    return cause


def caused_by(error: BaseException | None, kind: type) -> bool:
    """Whether an error of `kind` is the error or any of its causes."""
    return any(isinstance(link, kind) for link in _chain(error))


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
