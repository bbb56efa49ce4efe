"""Fan-out routing: canonical topics -> one topic per subscription, filtered, projected and
masked per department, exactly once (Kafka transactions)."""
