from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailer.contacts.addresses import (
    InvalidAddress,
    _fully_checked,
    address_hash,
    normalise_address,
)

local_parts = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9]", fullmatch=True)
domains = st.from_regex(
    r"[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,5})?\.(com|org|it|example)", fullmatch=True
)


@pytest.mark.parametrize(("given_", "expected"), [
    ("  Ada@Example.COM ", "ada@example.com"),
    ("lena@XN--bcher-kva.example", "lena@bücher.example"),
    ("Lena@Bücher.example", "lena@bücher.example"),
    ("first.last+tag@example.org", "first.last+tag@example.org"),
])  # fmt: skip
def test_addresses_have_one_normal_form(given_: str, expected: str) -> None:
    assert normalise_address(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bob@",
        "@example.com",
        "a b@example.com",
        "ada@example..com",
        "ada@exa mple.com",
        "ada\r\n@example.com",
    ],
)
def test_invalid_addresses_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        normalise_address(bad)


@given(local_parts, domains)
def test_normalising_is_idempotent_and_case_blind(local: str, domain: str) -> None:
    assume(".." not in local and not local.endswith("."))
    address = f"{local}@{domain}"
    normal = normalise_address(address)
    assert normalise_address(normal) == normal
    assert normalise_address(address.upper()) == normal


@given(local_parts, domains)
def test_hash_is_keyed(local: str, domain: str) -> None:
    assume(".." not in local)
    address = f"{local}@{domain}".lower()
    assert address_hash(b"k1" * 16, address) == address_hash(b"k1" * 16, address)
    assert address_hash(b"k1" * 16, address) != address_hash(b"k2" * 16, address)


any_local = st.text(alphabet="abcXYZ019._+-!#'\"() é@", min_size=0, max_size=70)
any_domain = st.one_of(domains, st.text(alphabet="abcé-.0_", min_size=0, max_size=20))


def verdict(check: Callable[[str], str], address: str) -> str | None:
    try:
        return check(address)
    except InvalidAddress:
        return None


@given(any_local, any_domain)
def test_the_fast_path_agrees_with_the_full_check(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert verdict(normalise_address, address) == verdict(_fully_checked, address.strip())


@pytest.mark.parametrize("address", [
    "a" * 65 + "@example.com",
    "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com",
    "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".com",
])  # fmt: skip
def test_long_addresses_get_the_libraries_verdict(address: str) -> None:
    assert verdict(normalise_address, address) == verdict(_fully_checked, address)
