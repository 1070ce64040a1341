import pytest

from smtp_balancer.decision.classes import Classifier

C = Classifier()


@pytest.mark.parametrize(
    ("headers", "trusted", "expected"),
    [
        ([], False, "transactional"),
        ([("Precedence", " Bulk ")], False, "bulk"),
        ([("Precedence", "first-class")], False, "transactional"),
        ([("List-Unsubscribe", "<mailto:u@x.test>")], False, "bulk"),
        ([("List-Id", "news.x.test")], False, "bulk"),
        ([("X-Mail-Class", "bulk")], True, "bulk"),
        ([("x-mail-class", "transactional"), ("Precedence", "bulk")], True, "transactional"),
        # a stranger's class header is ignored: headers never choose a route
        ([("X-Mail-Class", "transactional"), ("Precedence", "bulk")], False, "bulk"),
        ([("X-Mail-Class", "vip")], True, "transactional"),  # not a configured class
    ],
)
def test_classify(headers, trusted, expected):
    assert C.classify(headers, trusted)[0] == expected


def test_wanted_headers():
    assert C.wanted == {"x-mail-class", "precedence", "list-unsubscribe", "list-id"}
