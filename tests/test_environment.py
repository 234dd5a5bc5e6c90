"""Integer environment settings: plain decimal digits only, one rule and one message for every variable."""

from __future__ import annotations

import pytest

from clipsam.environment import env_int
from clipsam.errors import ConfigError


def test_unset_blank_and_valid_values(monkeypatch):
    monkeypatch.delenv("CLIPSAM_TEST_INT", raising=False)
    assert env_int("CLIPSAM_TEST_INT", 0, "a count", "for the default") is None
    monkeypatch.setenv("CLIPSAM_TEST_INT", "  ")
    assert env_int("CLIPSAM_TEST_INT", 0, "a count", "for the default") is None
    for text, value in (("0", 0), (" 7 ", 7), ("120", 120)):
        monkeypatch.setenv("CLIPSAM_TEST_INT", text)
        assert env_int("CLIPSAM_TEST_INT", 0, "a count", "for the default") == value


@pytest.mark.parametrize("text", ["02", "+2", "-1", "1.0", "2e3", "two", "\u00b2", "1 2", "0x10"])
def test_anything_but_plain_digits_is_refused_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv("CLIPSAM_TEST_INT", text)
    with pytest.raises(ConfigError, match=r"CLIPSAM_TEST_INT must be an integer >= 0 \(a count; decimal digits only"):
        env_int("CLIPSAM_TEST_INT", 0, "a count", "for the default")


def test_the_minimum_is_enforced(monkeypatch):
    monkeypatch.setenv("CLIPSAM_TEST_INT", "0")
    with pytest.raises(ConfigError, match=r">= 1 .* got '0'; unset it for all CPUs"):
        env_int("CLIPSAM_TEST_INT", 1, "threads", "for all CPUs")
