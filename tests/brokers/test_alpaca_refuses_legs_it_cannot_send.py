"""Until the Alpaca adapter sends bracket / OTO / OCO legs, it must refuse such an order
locally (a certain rejection, nothing sent) rather than send the parent alone: the log
would otherwise hold legs the broker never got."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.brokers.alpaca import AlpacaBroker
from engine.brokers.base import OrderRejectedError, OrderRequest
from events.catalogue import OrderLeg, StopLoss

D = Decimal


def test_order_with_legs_is_refused_before_sending() -> None:
    leg = OrderLeg(client_order_id="mqd-x-sl", role="stop_loss", side="sell", order_type="stop",
                   qty=D(1), stop_price=D(95))
    r = OrderRequest(client_order_id="mqd-x", symbol="AAPL", side="buy", order_type="market",
                     qty=D(1), order_class="oto", stop_loss=StopLoss(stop_price=D(95)),
                     legs=(leg,))
    with pytest.raises(OrderRejectedError, match="not sent: oto orders"):
        AlpacaBroker._order_body(r)
    simple = OrderRequest(client_order_id="mqd-x", symbol="AAPL", side="buy",
                          order_type="market", qty=D(1))
    assert AlpacaBroker._order_body(simple)["type"] == "market"
