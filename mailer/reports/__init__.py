"""Reports: the numbers a marketer reads (metrics per campaign, step and variant; A/B verdicts)."""
