"""Every write users see goes through a do_* function here (Zulip's zerver/actions).

Each runs in one transaction, checks the acting user's role, decides with the
pure rules, writes through the ledger and records an audit event in the same
transaction. Front ends (API, staff pages, CLI) call these and nothing else.
"""
