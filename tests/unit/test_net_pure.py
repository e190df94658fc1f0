"""The pure half of sandman's networking: facts parsed from captured dumps, MACs, rule building.

`net_facts/host.json` holds the payloads of the kernel's link, address and nf_tables rule dump
replies captured on a real host by `net_facts/capture.py`, with the facts iproute2 reported for the
same links at that moment: the parser must agree with iproute2 (pyinfra's facts tests: raw input,
expected fact). Hand-made messages cover what a capture does not show.
"""

from __future__ import annotations

import json
import pathlib
import re
import struct
import subprocess
import sys
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network

import pytest

from sandman.kernel import nft_filter, nft_rules
from sandman.kernel.net_facts import (
    AF_INET,
    BASE,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFINFOMSG,
    NAT,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE,
    NFTA_RULE_USERDATA,
    PORT,
    ChainFact,
    RuleFact,
    derive_mac,
    forward_drops,
    parse_addresses,
    parse_link,
    parse_links,
    parse_rule,
    rule_comment,
)
from sandman.kernel.netlink import (
    NFGENMSG,
    NLMSG_HEADER,
    attributes,
    encode_batch,
    error_of,
    messages,
)
from sandman.kernel.nft_rules import Forward
from sandman.units.names import IFNAME_MAX, bridge_name, veth_name

HOST = json.loads((pathlib.Path(__file__).parent / "net_facts" / "host.json").read_text())
LINKS = [bytes.fromhex(p) for p in HOST["links"]]
ADDRESSES = [bytes.fromhex(p) for p in HOST["addresses"]]
RULES = [bytes.fromhex(p) for p in HOST["rules"]]


def nla(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + bytes(-len(data) % 4)


def test_links_parse_as_iproute2_reports_them() -> None:
    facts = parse_links(LINKS, "")
    assert set(facts) == set(HOST["expected_links"])
    for name, expected in HOST["expected_links"].items():
        fact = facts[name]
        assert fact.name == name
        # The capture names fields as iproute2 does: its `index` is LinkFact.ifindex.
        got = {key: getattr(fact, "ifindex" if key == "index" else key) for key in expected}
        assert got == expected, name


def test_links_are_filtered_by_prefix() -> None:
    prefix = HOST["prefix"]
    assert set(parse_links(LINKS, prefix)) == {f"{prefix}b-lan", f"{prefix}-web"}
    assert set(parse_links(LINKS, f"{prefix}b-")) == {f"{prefix}b-lan"}
    assert parse_links(LINKS, "nothing-") == {}


def test_veth_fact_names_its_bridge_and_peer_netns() -> None:
    prefix = HOST["prefix"]
    facts = parse_links(LINKS, prefix)
    bridge, veth = facts[f"{prefix}b-lan"], facts[f"{prefix}-web"]
    assert (bridge.kind, veth.kind) == ("bridge", "veth")
    assert veth.master == bridge.ifindex and bridge.master is None
    assert veth.peer_netns_id is not None and bridge.peer_netns_id is None


def test_minimal_link_message_parses() -> None:
    payload = IFINFOMSG.pack(0, 1, 7, 0, 0) + nla(3, b"x\0") + nla(16, bytes([9]))
    fact = parse_link(payload)
    assert (fact.name, fact.ifindex, fact.up, fact.kind, fact.mac) == ("x", 7, False, None, None)
    assert fact.operstate == "9"  # an operstate newer than this table stays readable


def test_addresses_parse_as_iproute2_reports_them() -> None:
    facts = parse_addresses(ADDRESSES)
    expected = {
        int(index): tuple(sorted(map(ip_interface, addresses), key=lambda x: (x.version, x)))
        for index, addresses in HOST["expected_addresses"].items()
    }
    assert facts == expected


def test_address_parse_prefers_local_over_peer_address() -> None:
    header = IFADDRMSG.pack(AF_INET, 32, 0, 0, 7)
    ptp = header + nla(IFA_ADDRESS, bytes([10, 0, 0, 2])) + nla(IFA_LOCAL, bytes([10, 0, 0, 1]))
    assert parse_addresses([ptp]) == {7: (ip_interface("10.0.0.1/32"),)}


def test_netlink_framing() -> None:
    first = NLMSG_HEADER.pack(16 + 3, 16, 2, 1, 0) + b"abc" + b"\0"  # padded to 4
    second = NLMSG_HEADER.pack(16, 3, 0, 1, 0)
    assert list(messages(first + second)) == [(16, 2, 1, b"abc"), (3, 0, 1, b"")]
    with pytest.raises(ValueError, match="length 4"):
        list(messages(NLMSG_HEADER.pack(4, 3, 0, 1, 0)))


def test_attributes_mask_flags_and_stop_at_a_bad_length() -> None:
    nested = struct.pack("=HH", 8, 0x8000 | 18) + b"\1\2\3\4"  # NLA_F_NESTED
    assert list(attributes(nested + struct.pack("=HH", 2, 1))) == [(18, b"\1\2\3\4")]


# --- MACs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sm-web", "smb-lan", "s1a2-a-very-lon", "x"])
@pytest.mark.parametrize("role", ["bridge", "host", "peer"])
def test_mac_is_stable_unicast_and_locally_administered(name: str, role: str) -> None:
    mac = derive_mac(name, role)
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
    first = int(mac[:2], 16)
    assert first & 0x01 == 0, "multicast bit set"
    assert first & 0x02 == 0x02, "not locally administered"
    assert derive_mac(name, role) == mac


def test_mac_differs_per_name_and_role() -> None:
    macs = {derive_mac(n, r) for n in ("sm-a", "sm-b", "smb-a") for r in ("bridge", "host", "peer")}
    assert len(macs) == 9


def test_mac_is_pinned() -> None:
    # A change of the derivation changes every sandbox's MAC on upgrade: make it a decision.
    assert derive_mac("sm-web", "peer") == "0e:83:c0:6c:04:5e"
    assert derive_mac("smcap-web", "host") == HOST["expected_links"]["smcap-web"]["mac"]
    assert derive_mac("smcapb-lan", "bridge") == HOST["expected_links"]["smcapb-lan"]["mac"]


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["sm", "s1f3", "smt0a9c"])
@pytest.mark.parametrize("unit", ["a", "web", "a-rather-long-unit-name-of-32-ch"])
def test_link_names_fit_the_kernel_and_keep_their_prefix(tag: str, unit: str) -> None:
    for name, prefix in ((veth_name(tag, unit), f"{tag}-"), (bridge_name(tag, unit), f"{tag}b-")):
        assert len(name) <= IFNAME_MAX
        assert name.startswith(prefix)
        assert "/" not in name and " " not in name
    assert veth_name(tag, unit) != bridge_name(tag, unit)


# --- NAT rules -----------------------------------------------------------------------------------


def rule_message(chain: str, handle: int, userdata: bytes | None) -> bytes:
    payload = NFGENMSG.pack(1, 0, 0) + nla(NFTA_RULE_CHAIN, chain.encode() + b"\0")
    payload += nla(NFTA_RULE_HANDLE, struct.pack(">Q", handle))
    return payload + (b"" if userdata is None else nla(NFTA_RULE_USERDATA, userdata))


def comment_tlv(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return bytes([0, len(raw)]) + raw


def test_rule_comments_parse_back() -> None:
    spec = "tcp 127.0.0.1:8080 10.88.0.10:80"
    raw = rule_message("output", 9, comment_tlv(f"port web {spec}"))
    assert parse_rule(raw) == RuleFact("output", 9, PORT, "web", spec)
    foreign = rule_message("x", 3, bytes([7, 2, 0, 0]) + comment_tlv("hi there"))
    assert parse_rule(foreign) == RuleFact("x", 3, "", "", "hi there")
    assert parse_rule(rule_message("x", 1 << 40, None)) == RuleFact("x", 1 << 40, "", "", "")


# Which attributes of each expression nest an NFTA_DATA_VALUE (nf_tables.h).
_DATA_ATTRS = {"cmp": {3}, "bitwise": {4, 5}, "immediate": {2}}


def decode(element: bytes) -> tuple[str, dict[int, bytes]]:
    """An NFTA_LIST_ELEM: the expression's name and its data attributes."""
    found = dict(attributes(element))
    return found[1].rstrip(b"\0").decode(), dict(attributes(found.get(2, b"")))


def values(elements: Iterable[bytes]) -> list[bytes]:
    """Every NFTA_DATA_VALUE in the expressions, in order (verdicts left out)."""
    out = []
    for name, data in map(decode, elements):
        for kind in sorted(_DATA_ATTRS.get(name, set()) & set(data)):
            out += [v for t, v in attributes(data[kind]) if t == 1]
    return out


def elements(rule: nft_rules.Rule) -> list[bytes]:
    """The rule's expressions without their NFTA_LIST_ELEM headers, as a dump shows them."""
    return [value for encoded in rule.expressions for _, value in attributes(encoded)]


def be32_of(data: dict[int, bytes], kind: int) -> int:
    return int.from_bytes(data[kind], "big")


def rule_elements(payload: bytes) -> list[bytes]:
    found = dict(attributes(payload, NFGENMSG.size))
    return [element for _, element in attributes(found[NFTA_RULE_EXPRESSIONS])]


def built_rules() -> dict[tuple[str, str], nft_rules.Rule]:
    """The rules capture.py made, built again."""
    built = {(r.chain, r.comment): r for r in nft_rules.base_rules()}
    lan = (ip_network("10.231.99.0/24"),)
    built |= {(r.chain, r.comment): r for r in nft_rules.nat_rules("lan", lan)}
    target = IPv4Address("10.231.99.2")
    for args in (("tcp", 48080, "127.0.0.1", target, 80), ("udp", 48053, None, target, 53)):
        built |= {(r.chain, r.comment): r for r in nft_rules.port_rules("web", Forward(*args))}
    return built


def test_captured_rules_are_the_rules_sandman_builds() -> None:
    """The kernel's own account of the rules has the comments, expressions and values sent."""
    built = built_rules()
    facts = [parse_rule(m) for m in RULES]
    assert sorted((f.chain, f.comment) for f in facts) == sorted(built)
    for raw, fact in zip(RULES, facts, strict=True):
        sent = elements(built[(fact.chain, fact.comment)])
        assert [decode(e)[0] for e in rule_elements(raw)] == [decode(e)[0] for e in sent]
        assert values(rule_elements(raw)) == values(sent)


def test_masquerade_matches_the_subnet_and_not_its_inside() -> None:
    (rule,) = nft_rules.nat_rules("lan", (ip_network("10.88.0.0/24"),))
    assert (rule.chain, rule.comment) == ("postrouting", rule_comment(NAT, "lan", "10.88.0.0/24"))
    mask, net = bytes([255, 255, 255, 0]), bytes([10, 88, 0, 0])
    assert values(elements(rule)) == [b"\x02", mask, bytes(4), net, mask, bytes(4), net]
    ops = [be32_of(d, 2) for n, d in map(decode, elements(rule)) if n == "cmp"]
    assert ops == [0, 0, 1]  # ipv4, saddr in the subnet, daddr not in it
    assert decode(elements(rule)[-1])[0] == "masq"


def test_ipv6_masquerade_uses_ipv6_offsets() -> None:
    (rule,) = nft_rules.nat_rules("lan", (ip_network("fd00:88::/64"),))
    offsets = [be32_of(d, 3) for n, d in map(decode, elements(rule)) if n == "payload"]
    assert offsets == [8, 24]
    assert values(elements(rule))[0] == b"\x0a"


def test_port_rules_dnat_in_prerouting_and_output() -> None:
    forward = Forward("tcp", 8080, "127.0.0.1", IPv4Address("10.88.0.10"), 80)
    rules = nft_rules.port_rules("web", forward)
    assert [r.chain for r in rules] == ["prerouting", "output"]
    spec = "tcp 127.0.0.1:8080 10.88.0.10:80"
    assert {r.comment for r in rules} == {rule_comment(PORT, "web", spec)}
    assert values(elements(rules[0])) == [
        b"\x02", bytes([127, 0, 0, 1]), b"\x06", (8080).to_bytes(2, "big"),
        bytes([10, 88, 0, 10]), (80).to_bytes(2, "big"),
    ]  # fmt: skip
    nat = dict(decode(elements(rules[0])[-1])[1])
    assert [be32_of(nat, k) for k in (1, 2, 3, 5)] == [1, 2, 1, 2]  # dnat, ipv4, reg 1, reg 2


def test_port_rule_without_host_address_matches_local_addresses() -> None:
    forward = Forward("udp", 53, None, IPv6Address("fd00::a"), 53)
    (rule, _) = nft_rules.port_rules("web", forward)
    assert rule.comment == rule_comment(PORT, "web", "udp *:53 [fd00::a]:53")
    fib = next(d for n, d in map(decode, elements(rule)) if n == "fib")
    assert [be32_of(fib, k) for k in (1, 2, 3)] == [1, 3, 2]  # reg 1, addrtype, daddr


def test_port_rule_refuses_mixed_families() -> None:
    with pytest.raises(ValueError, match="address families differ"):
        nft_rules.port_rules("web", Forward("tcp", 80, "::1", IPv4Address("10.0.0.2"), 80))


def test_base_rules_guard_loopback_and_masquerade_localnet() -> None:
    guard, localnet = nft_rules.base_rules()
    assert (guard.chain, guard.comment) == ("guard", rule_comment(BASE, "guard", "127.0.0.0/8"))
    name, data = decode(elements(guard)[-1])
    verdict = dict(attributes(dict(attributes(data[2]))[2]))  # DATA -> VERDICT -> CODE
    assert (name, be32_of(verdict, 1)) == ("immediate", 0)  # NF_DROP
    assert (localnet.chain, decode(elements(localnet)[-1])[0]) == ("postrouting", "masq")


def test_batch_encoding_frames_every_request() -> None:
    table = "sandman_sm"
    requests = [
        nft_rules.new_table(table),
        *(nft_rules.new_chain(table, c) for c in nft_rules.CHAINS),
    ]
    requests.append(nft_rules.delete_rule(table, "output", 7, "port web x"))
    framed = list(messages(encode_batch(requests)))
    assert [f[2] for f in framed] == list(range(1, len(requests) + 3))  # sequences
    assert (framed[0][0], framed[-1][0]) == (0x10, 0x11)  # BATCH_BEGIN, BATCH_END
    assert all(f[1] & 0x5 == 0x5 for f in framed[1:-1])  # REQUEST | ACK
    handle = dict(attributes(framed[-2][3], NFGENMSG.size))[NFTA_RULE_HANDLE]
    assert int.from_bytes(handle, "big") == 7


def test_error_of_reads_the_extended_ack_message() -> None:
    echoed = NLMSG_HEADER.pack(16, 0, 0, 5, 0)
    payload = struct.pack("=i", -17) + echoed + nla(1, b"Chain exists\0")
    assert error_of(0x200, payload) == (17, "Chain exists")
    assert error_of(0, struct.pack("=i", 0) + echoed) == (0, "")


def test_rule_comment_must_fit_its_tlv() -> None:
    rule = nft_rules.Rule("output", "x" * 255, ())
    with pytest.raises(ValueError, match="longer than 254"):
        nft_rules.new_rule("t", rule)


REACHABLE = [(None, True), ("127.0.0.1", True), ("127.1.2.3", True), ("10.0.0.1", False)]


@pytest.mark.parametrize(("host_address", "reachable"), [*REACHABLE, ("::1", False)])
def test_loopback_reachable(host_address: str | None, reachable: bool) -> None:
    assert nft_rules.loopback_reachable(host_address) is reachable


def test_no_network_module_imports_pyroute2() -> None:
    """observe runs on every plan and status: its dumps must not pay pyroute2's 130 ms import;
    nor do NAT, the bridges, the veths and apply's network steps, which speak netlink themselves
    (pyroute2 is the tests' alone: only the test extra installs it)."""
    modules = (
        "sandman.kernel.net_dump, sandman.kernel.nat, sandman.kernel.net, sandman.kernel.veth, "
        "sandman.kernel.source_filter, sandman.apply.networks"
    )
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if 'pyroute2' in m))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


# --- the forward policy and the source filter (nft_filter.py) -----------------------------------


def test_forward_rules_let_in_what_stays_answers_or_was_published_then_close_the_bridge() -> None:
    rules = nft_filter.forward_rules("lan", "smb-lan")
    assert [r.chain for r in rules] == ["forward"] * 4
    specs = [r.comment.split(" ", 2)[2] for r in rules]
    assert specs == [f"{w} smb-lan" for w in ("within", "replies", "published", "closed")]
    verdicts = [be32_of(_verdict(r), 1) for r in rules]
    assert verdicts == [1, 1, 1, 0]  # accept, accept, accept, drop: the drop comes last
    name = b"smb-lan".ljust(16, b"\0")
    assert values(elements(rules[-1])) == [name]  # oifname "smb-lan", nothing else
    ct = [decode(e)[1] for e in elements(rules[2]) if decode(e)[0] == "ct"]
    assert [be32_of(d, 2) for d in ct] == [2]  # NFT_CT_STATUS
    assert (0x20).to_bytes(4, sys.byteorder) in values(elements(rules[2]))  # IPS_DST_NAT


def _verdict(rule: nft_rules.Rule) -> dict[int, bytes]:
    name, data = decode(elements(rule)[-1])
    assert name == "immediate"
    return dict(attributes(dict(attributes(data[2]))[2]))  # DATA -> VERDICT -> CODE, CHAIN


def test_link_local_is_the_eui64_of_the_mac() -> None:
    source = nft_filter.Source("sm-web", "0e:85:aa:1d:21:ae", IPv4Address("10.88.0.2"))
    assert source.link_local == IPv6Address("fe80::c85:aaff:fe1d:21ae")


def test_source_rules_jump_from_the_veth_into_the_sandboxs_own_chain() -> None:
    six = nft_filter.Source("sm-web", derive_mac("sm-web", "peer"), IPv4Address("10.88.0.2"))
    rules = nft_filter.source_rules("web", six)
    entry = rules[-1]
    assert (entry.chain, entry.comment) == ("prerouting", "antispoof web port sm-web")
    assert _verdict(entry)[2] == b"from_web\0"  # NFTA_VERDICT_CHAIN
    assert be32_of(_verdict(entry), 1) == 2**32 - 3  # NFT_JUMP
    checks = [r.comment.split(" ")[2] for r in rules[:-1]]
    assert checks == ["mac", "ethertypes", "arp-mac", "arp-ip", "ip"]
    assert {r.chain for r in rules[:-1]} == {"from_web"}
    assert all(be32_of(_verdict(r), 1) == 0 for r in rules[:-1])  # every check drops


def test_a_sandbox_with_ipv6_gets_the_ipv6_checks_and_one_without_none() -> None:
    mac = derive_mac("sm-web", "peer")
    four = nft_filter.Source("sm-web", mac, IPv4Address("10.88.0.2"))
    dual = nft_filter.Source("sm-web", mac, IPv4Address("10.88.0.2"), IPv6Address("fd00::2"))
    names = [r.comment.split(" ")[2] for r in nft_filter.source_rules("web", dual)[:-1]]
    assert names[-4:] == ["ip6", "router-advert", "redirect", "neighbor-advert"]
    assert "ethertypes arp ip ip6" in nft_filter.source_rules("web", dual)[1].comment
    assert nft_filter.source_rules("web", four)[1].comment.split(" ", 2)[2] == "ethertypes arp ip"


def test_forward_drops_are_the_ip_forward_chains_of_other_tables_that_drop() -> None:
    chains = [
        ChainFact(2, "filter", "FORWARD", 2, 0),  # iptables-nft under Docker: found
        ChainFact(1, "sandman_sm", "forward", 2, 0),  # sandman's own: never
        ChainFact(1, "firewalld", "filter_FORWARD", 2, 1),  # accepts by default
        ChainFact(2, "filter", "INPUT", 1, 0),  # not forwarding
        ChainFact(7, "br", "forward", 2, 0),  # bridge family: not the routed path
        ChainFact(10, "filter", "DOCKER-USER", None, None),  # a regular chain
    ]
    found = forward_drops(chains, "sandman_sm")
    assert [c.where for c in found] == ["ip filter chain FORWARD"]


@pytest.mark.parametrize("address6", [None, "fd00::5"])
def test_source_rule_names_are_those_of_the_rules_in_their_order(address6: str | None) -> None:
    # Observe compares the names alone; they must be exactly what source_rules writes.
    from ipaddress import IPv4Address, IPv6Address

    from sandman.kernel import nft_filter

    six = IPv6Address(address6) if address6 else None
    source = nft_filter.Source("vethx", "02:11:22:33:44:55", IPv4Address("10.1.2.3"), six)
    rules = nft_filter.source_rules("box", source)
    assert nft_filter.source_rule_names("box", source) == [(r.chain, r.comment) for r in rules]
