"""The pos-gateway's pure domain: the ledger of recorded transactions and how a submission
is judged against it. No I/O."""
