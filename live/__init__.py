"""Learning from what users do after training: the durable event log, live user state (embedded
or Redis), trending counters and the configuration of all three."""
