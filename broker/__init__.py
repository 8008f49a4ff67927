"""raftmq.broker."""
