from smtp_balancer.decision.providers import ProviderSpec, ProviderTable, domain_of


def test_domains_and_mx_suffixes():
    t = ProviderTable.build({"corp": ProviderSpec(domains=("corp.test",), mx_suffixes=("mx.corp.test",))})
    assert t.for_domain("GMAIL.com.") == "google"
    assert t.for_domain("corp.test") == "corp"
    assert t.for_domain("example.org") == "other"
    assert t.for_mx("gmail-smtp-in.l.google.com") == "google"
    assert t.for_mx("example-com.mail.protection.outlook.com") == "microsoft"
    assert t.for_mx("mta7.am0.yahoodns.net.") == "yahoo"
    assert t.for_mx("a.mx.corp.test") == "corp"
    assert t.for_mx("notgoogle.com") == "other"
    rcpts = ["a@gmail.com", "b@googlemail.com", "c@x.test"]
    assert t.for_domains([domain_of(r) for r in rcpts]) == {"google": 2, "other": 1}


def test_yaml_extends_a_builtin_provider():
    t = ProviderTable.build({"google": ProviderSpec(domains=("workspace-customer.test",))})
    assert t.for_domain("workspace-customer.test") == "google" and t.for_domain("gmail.com") == "google"
