"""The Postfix policy-delegation daemon (also answers Exim ${readsocket})."""
