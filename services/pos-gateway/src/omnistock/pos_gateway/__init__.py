"""The POS gateway: store POS transactions into the log within milliseconds."""
