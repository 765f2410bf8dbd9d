from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailer.contacts.addresses import InvalidAddress, address_hash, normalise_address

local_parts = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9]", fullmatch=True)
domains = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|org|it|example)", fullmatch=True)


@pytest.mark.parametrize(("given_", "expected"), [
    ("  Ada@Example.COM ", "ada@example.com"),
    ("lena@XN--bcher-kva.example", "lena@bücher.example"),
    ("Lena@Bücher.example", "lena@bücher.example"),
    ("first.last+tag@example.org", "first.last+tag@example.org"),
])  # fmt: skip
def test_addresses_have_one_normal_form(given_: str, expected: str) -> None:
    assert normalise_address(given_) == expected


@pytest.mark.parametrize("bad", ["", "bob@", "@example.com", "a b@example.com",
                                 "ada@example..com", "ada@exa mple.com", "ada\r\n@example.com"])
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
