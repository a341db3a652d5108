"""The gateway's own status page (page.py: aiohttp in the agent's loop; view.py: what it shows, from
the parts' snapshots; auth.py: the token and sessions; static/: the page itself, no external
resources) and the terminal rendering of the same view for `guardian-agent status` (text.py)."""
