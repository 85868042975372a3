"""Alpaca's bracket/OCO/OTO legs under our client ids.

Alpaca names a parent's legs itself (random client ids) and a leg's own JSON has no parent
field: a leg is only known as a member of its parent's `legs`. Our log names legs by
`events.catalogue.leg_client_order_id(parent, role)`. `LegNames` maps between the two: every
parent seen with its legs (a submit answer, a nested listing or lookup, a parent's stream
update) teaches it the legs' broker ids, and every order it passes on carries our id. The
role follows from the leg's type: the take-profit is the limit, the stop-loss the stop,
stop-limit or trailing stop. A leg replaced by a PATCH of ours already has our id (we chose
it), so it is kept.
"""

from __future__ import annotations

import msgspec

from events.catalogue import leg_client_order_id

from .base import BrokerOrder

LEG_SUFFIXES = ("-tp", "-sl")


def leg_role(leg: BrokerOrder) -> str:
    return "take_profit" if leg.order_type == "limit" else "stop_loss"


def parent_of_leg_id(client_order_id: str) -> str | None:
    """The parent's client id of one of our leg ids, else None."""
    for suffix in LEG_SUFFIXES:
        if client_order_id.endswith(suffix):
            return client_order_id[: -len(suffix)]
    return None


class LegNames:
    def __init__(self) -> None:
        self._ours: dict[str, str] = {}  # broker order id -> our client id
        self._broker: dict[str, str] = {}  # our client id -> broker order id

    def broker_id_of(self, client_order_id: str) -> str | None:
        return self._broker.get(client_order_id)

    def name(self, o: BrokerOrder) -> BrokerOrder:
        """`o` (and its legs) under our client ids, as far as they are known."""
        ours = self._ours.get(o.broker_order_id)
        if ours is not None and ours != o.client_order_id:
            o = msgspec.structs.replace(o, client_order_id=ours)
        if o.legs:
            o = msgspec.structs.replace(o, legs=tuple(self._leg(o, leg) for leg in o.legs))
        return o

    def _leg(self, parent: BrokerOrder, leg: BrokerOrder) -> BrokerOrder:
        if leg.client_order_id.startswith(parent.client_order_id):
            coid = leg.client_order_id  # ours already: a replacement we named
        else:
            coid = self._ours.get(leg.broker_order_id) or leg_client_order_id(
                parent.client_order_id, leg_role(leg))
        self._ours[leg.broker_order_id] = coid
        self._broker[coid] = leg.broker_order_id
        return self.name(msgspec.structs.replace(leg, client_order_id=coid))
