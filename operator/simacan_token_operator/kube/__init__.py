"""Every Kubernetes call: the client, watches, leader election, Events, deadlines."""
