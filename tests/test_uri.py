"""acgan/uri.py: a URI holding credentials is refused and never shown with them."""

import pytest

from acgan.errors import UserError
from acgan.uri import check_uri, redact, uri_problem


@pytest.mark.parametrize("uri", ["s3://KEY:secret@bucket/x", "s3://KEY:abc/def@bucket/x", "https://user@host/x"])
def test_credentials_are_refused_and_redacted(uri):
    problem = uri_problem(uri)
    assert problem is not None and "holds credentials" in problem and "secret" not in problem
    with pytest.raises(UserError, match=r"^--store .*\*\*\*@"):
        check_uri(uri, "--store")


@pytest.mark.parametrize("uri", ["s3://bucket/prefix", "http://127.0.0.1:9000", "/data/store", "file:///tmp/s"])
def test_plain_uris_pass(uri):
    assert uri_problem(uri) is None and check_uri(uri, "--store") == uri


def test_an_s3_uri_needs_two_slashes():
    assert "s3: needs two slashes" in uri_problem("s3:bucket/x")


def test_redact_hides_every_userinfo_in_a_text():
    assert redact("from s3://a:b@x to http://c:d@y") == "from s3://***@x to http://***@y"
