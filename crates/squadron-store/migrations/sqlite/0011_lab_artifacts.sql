-- Files a job's results point to (LAVA's test-attachment references), as
-- a JSON list of {suite, result, url}, for plugins that read them.
ALTER TABLE testjobs ADD COLUMN artifacts TEXT;
