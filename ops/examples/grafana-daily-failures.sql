-- Grafana (PostgreSQL data source, format "Time series"): failures per day
-- for one builder. In Grafana write the filter as $__timeFilter(time); this
-- file spells out the BETWEEN it expands to so that it can be run by hand.
SELECT time, builder_name AS metric, failures AS value
  FROM buildmaster_v1.builder_daily_stats
 WHERE time BETWEEN now() - interval '30 days' AND now()
   AND builder_name = 'unit'
 ORDER BY time;
