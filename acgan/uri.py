"""URI rules: credentials never inside a URI a user gives (a store, a data source, a class list, an endpoint), and
never in a message or a log. Settings' validators, the CLI and `open_store` check URIs here; nothing here reads the
environment or opens anything, so the settings and the model import it without the storage code.
"""

from __future__ import annotations

import re

from acgan.errors import UserError

# Credentials inside a URI: `scheme://user:secret@host`, also where the secret holds '/' (an AWS secret key may),
# which ends the authority early: `s3://KEY:abc/def@bucket`. A ':' then a port number is a host, not a user.
_CREDENTIALS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//)?([^/@]*@|[^/@:]*:(?!\d+([/?#]|$))[^@]*@)")
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*:(?://)?)\S*@")


def holds_credentials(uri: str) -> bool:
    return _CREDENTIALS.match(uri) is not None


def redact(text: str) -> str:
    """`scheme://user:secret@host` -> `scheme://***@host`: credentials in a URI never reach a message or a log."""
    return _USERINFO.sub(r"\1***@", text)


def uri_problem(uri: str) -> str | None:
    """What is wrong with a URI a user gives (a store, a data source, a class list, an endpoint), or None; the
    message never holds the credentials. Every command checks its URIs with it where it starts (acgan_cli/main.py), the
    settings' validators do (acgan/settings.py), and `open_store`, so a secret is refused before anything is
    compiled, submitted, logged or written."""
    if holds_credentials(uri):
        return (f"{redact(uri)!r} holds credentials: write it without them and give them in the environment "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3, KFP_TOKEN for KFP) or a Kubernetes Secret")
    if re.match(r"(?i)s3:(?!//)", uri):  # else a local folder named `s3:` would be made
        return f"{uri!r} is not an S3 URI (s3: needs two slashes): write s3://BUCKET/PREFIX"
    return None


def check_uri(uri: str, what: str) -> str:
    """`uri` if `uri_problem` finds nothing; else UserError naming `what` (the flag) and the problem."""
    problem = uri_problem(uri)
    if problem is not None:
        raise UserError(f"{what} {problem}")
    return uri
