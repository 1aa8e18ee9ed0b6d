"""Hidden-cost score cards: one command measures a dense model and its compressed points on a
versioned suite and writes ``card.json`` (:mod:`.schema`) and ``card.html``; cards of one suite
merge into a leaderboard.

- :mod:`.suites`: the suites (``offline-mini``, ``paper-8``, or a YAML file);
- :mod:`.build`: the suite run as a study, and the card computed from its runs;
- :mod:`.render`: the card's page, and the leaderboard.
"""

from hiddencost.card.build import card_from_table, card_study, index_of, make_card
from hiddencost.card.render import leaderboard, write_card, write_leaderboard
from hiddencost.card.schema import CARD_SCHEMA, Card, read_card
from hiddencost.card.suites import Suite, load_suite, suite_names

__all__ = ["CARD_SCHEMA", "Card", "Suite", "card_from_table", "card_study", "index_of",
           "leaderboard", "load_suite", "make_card", "read_card", "suite_names", "write_card",
           "write_leaderboard"]
