"""Development tools: the simulated helpdesk and ``slatrack demo``."""
