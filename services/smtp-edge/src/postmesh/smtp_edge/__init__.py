"""SMTP edge: MX (25), submission (587) and submissions (465) listeners that queue accepted mail
on the bus (postmesh.inbound) before answering 250."""
