"""The API key: from an environment variable or a file, kept as a digest, checked as a bearer token."""

from __future__ import annotations

import pytest

from clipsam.errors import ClipSamError
from clipsam.serve.auth import check_bearer, key_digest, load_api_key
from clipsam.serve.errors import ServeError


def test_key_from_env_or_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSAM_TEST_KEY", "  s3cret \n")
    assert load_api_key(env="CLIPSAM_TEST_KEY") == "s3cret"
    f = tmp_path / "key"
    f.write_text("from-file\nsecond line ignored\n")
    assert load_api_key(file=f) == "from-file"
    assert load_api_key() is None
    with pytest.raises(ClipSamError, match="not both"):
        load_api_key(env="CLIPSAM_TEST_KEY", file=f)
    monkeypatch.setenv("CLIPSAM_TEST_KEY", "")
    with pytest.raises(ClipSamError, match="CLIPSAM_TEST_KEY is not set or empty"):
        load_api_key(env="CLIPSAM_TEST_KEY")
    with pytest.raises(ClipSamError, match="cannot read the API key file .*missing"):
        load_api_key(file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ClipSamError, match="is empty"):
        load_api_key(file=tmp_path / "empty")


def test_keys_an_http_header_cannot_carry_are_refused(monkeypatch, tmp_path):
    (tmp_path / "random").write_bytes(bytes(range(128, 256)))  # random bytes: not UTF-8
    with pytest.raises(ClipSamError, match="random is not UTF-8 text"):
        load_api_key(file=tmp_path / "random")
    (tmp_path / "accented\tkey").write_text("cl\u00e9-secr\u00e8te\n", encoding="utf-8")
    with pytest.raises(
        ClipSamError, match=r"2 character\(s\) that are not printable ASCII \(first at position 3\)"
    ) as e:
        load_api_key(file=tmp_path / "accented\tkey")
    assert r"accented\tkey'" in str(e.value)  # the file's name quoted with escapes, as every path in a message
    monkeypatch.setenv("CLIPSAM_TEST_KEY", "q9\tq9")
    with pytest.raises(ClipSamError, match="CLIPSAM_TEST_KEY has 1 character") as e:
        load_api_key(env="CLIPSAM_TEST_KEY")
    assert "q9" not in str(e.value)  # the message does not leak the key
    monkeypatch.setenv("CLIPSAM_TEST_KEY", "printable ~!@# key")
    assert load_api_key(env="CLIPSAM_TEST_KEY") == "printable ~!@# key"


def test_bearer_check():
    digest = key_digest("s3cret")
    assert len(digest) == 64 and "s3cret" not in digest
    check_bearer("Bearer s3cret", digest)
    check_bearer("bearer  s3cret ", digest)
    check_bearer(None, None)  # no key set: anything goes
    check_bearer("Bearer whatever", None)
    for header, text in (
        (None, "needs an API key"),
        ("Basic s3cret", "needs an API key"),
        ("Bearer ", "needs an API key"),
        ("Bearer s3cret2", "wrong"),
        ("Bearer S3CRET", "wrong"),
    ):
        with pytest.raises(ServeError, match=text) as e:
            check_bearer(header, digest)
        assert (e.value.status, e.value.code) == (401, "unauthorized")
