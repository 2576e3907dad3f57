"""OneID: resolve the buyer of every sales line to a member across channels.

An online line resolves through its platform account (identities.channel = the shop's platform),
then through the receiver's phone hash (channel = phone); a POS line through its loyalty card
(channel = pos). What resolves to nobody is a guest (an id we cannot link) or anonymous (no id
at all). A channel id linked to two members is ambiguous and links to nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class IdentityIndex:
    """(channel, channel_user_id) → member_id, one member per id."""

    links: pa.Table  # channel, channel_user_id, member_id — unique on the first two
    conflicts: int  # channel ids dropped because they pointed at several members


def identity_index(identities: pa.Table) -> IdentityIndex:
    """Build the lookup from the identities table, dropping ambiguous ids."""
    keys = ["channel", "channel_user_id"]
    valid = identities.select([*keys, "member_id"]).filter(
        pc.and_(pc.is_valid(identities["channel_user_id"]), pc.is_valid(identities["member_id"])))
    grouped = valid.group_by(keys).aggregate([("member_id", "min"), ("member_id", "count_distinct")])
    unique = pc.equal(grouped["member_id_count_distinct"], 1)
    links = grouped.filter(unique).select([*keys, "member_id_min"]).rename_columns([*keys, "member_id"])
    return IdentityIndex(links, conflicts=int(grouped.num_rows - links.num_rows))


def _lookup(lines: pa.Table, links: pa.Table, channel_col: str | None, channel: str | None,
            id_col: str, out: str) -> pa.Table:
    """Left-join a member column `out` onto lines, matching (channel, id) against the links.

    The links are first cut down to the ids that occur in `lines` (one hash-set scan), so the
    join's hash table holds a day's buyers rather than the whole data bank."""
    present = pc.unique(lines[id_col].drop_null())
    links = links.filter(pc.is_in(links["channel_user_id"], value_set=present))
    if channel_col is None:
        right = links.filter(pc.equal(links["channel"], channel)).drop_columns(["channel"])
        right = right.rename_columns([id_col, out])
        return lines.join(right, keys=id_col, join_type="left outer")
    right = links.rename_columns([channel_col, id_col, out])
    return lines.join(right, keys=[channel_col, id_col], join_type="left outer")


def resolve_online(lines: pa.Table, index: IdentityIndex) -> pa.Table:
    """Add member_id and resolution to online lines that carry `platform`, `buyer_id`, `phone_hash`."""
    with_account = _lookup(lines, index.links, "platform", None, "buyer_id", "_by_account")
    with_phone = _lookup(with_account, index.links, None, "phone", "phone_hash", "_by_phone")
    by_account, by_phone = with_phone["_by_account"], with_phone["_by_phone"]
    member = pc.coalesce(by_account, by_phone)
    resolution = pc.if_else(pc.is_valid(by_account), "channel_id",
                            pc.if_else(pc.is_valid(by_phone), "phone", "guest"))
    return (with_phone.drop_columns(["_by_account", "_by_phone"])
            .append_column("member_id", member).append_column("resolution", resolution))


def resolve_pos(lines: pa.Table, index: IdentityIndex) -> pa.Table:
    """Add member_id and resolution to POS lines that carry `member_card_id`."""
    joined = _lookup(lines, index.links, None, "pos", "member_card_id", "_by_card")
    card = joined["_by_card"]
    resolution = pc.if_else(pc.is_valid(card), "channel_id",
                            pc.if_else(pc.is_valid(joined["member_card_id"]), "guest", "anonymous"))
    return joined.drop_columns(["_by_card"]).append_column("member_id", card).append_column("resolution", resolution)
