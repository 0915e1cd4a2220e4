"""Flask blueprints: login (auth helper), overview, one dashboard per pool."""
