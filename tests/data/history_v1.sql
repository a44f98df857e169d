-- A TestViper history database at schema version 1 (before run labels, deliveries
-- and profiles), with one run. Frozen: the migration test upgrades it.
BEGIN TRANSACTION;
CREATE TABLE schema_info (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
CREATE TABLE runs (
	id VARCHAR(36) NOT NULL, 
	project VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	exit_code INTEGER, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	duration FLOAT, 
	git_commit VARCHAR(64), 
	git_branch VARCHAR(255), 
	git_dirty BOOLEAN, 
	python VARCHAR(50), 
	host VARCHAR(255), 
	platform VARCHAR(255), 
	ci JSON, 
	command JSON, 
	run_dir TEXT, 
	tests_total INTEGER NOT NULL, 
	passed INTEGER NOT NULL, 
	failed INTEGER NOT NULL, 
	errors INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	xfailed INTEGER NOT NULL, 
	xpassed INTEGER NOT NULL, 
	cov_statements INTEGER, 
	cov_missing INTEGER, 
	cov_branches INTEGER, 
	cov_covered_branches INTEGER, 
	cov_percent FLOAT, 
	ingested_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_runs_started_at ON runs (started_at);
CREATE INDEX ix_runs_git_branch ON runs (git_branch);
CREATE TABLE tests (
	id INTEGER NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	nodeid TEXT NOT NULL, 
	outcome VARCHAR(10) NOT NULL, 
	phase VARCHAR(10) NOT NULL, 
	duration FLOAT NOT NULL, 
	message TEXT, 
	log TEXT, 
	markers JSON, 
	params JSON, 
	worker VARCHAR(20), 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE INDEX ix_tests_run_id ON tests (run_id);
CREATE INDEX ix_tests_nodeid ON tests (nodeid);
CREATE TABLE file_coverage (
	run_id VARCHAR(36) NOT NULL, 
	path TEXT NOT NULL, 
	statements INTEGER NOT NULL, 
	missing INTEGER NOT NULL, 
	excluded INTEGER NOT NULL, 
	branches INTEGER NOT NULL, 
	covered_branches INTEGER NOT NULL, 
	percent FLOAT NOT NULL, 
	executed_lines TEXT NOT NULL, 
	missing_lines TEXT NOT NULL, 
	PRIMARY KEY (run_id, path), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE TABLE component_coverage (
	run_id VARCHAR(36) NOT NULL, 
	component VARCHAR(200) NOT NULL, 
	files INTEGER NOT NULL, 
	statements INTEGER NOT NULL, 
	missing INTEGER NOT NULL, 
	branches INTEGER NOT NULL, 
	covered_branches INTEGER NOT NULL, 
	percent FLOAT, 
	PRIMARY KEY (run_id, component), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "component_coverage" VALUES('019a0000-0000-7000-8000-000000000001','core',1,10,2,4,3,7.85714285714285694001e+01);
INSERT INTO "runs" VALUES('019a0000-0000-7000-8000-000000000001','legacy','complete',1,'2026-10-01 10:00:00.000000','2026-10-01 10:01:00.000000',60.0,'abc123','main',0,'3.11.7','ci-1','Linux',NULL,'["pytest"]','/tmp/x',2,1,1,0,0,0,0,10,2,4,3,7.85714285714285694001e+01,'2026-10-01 10:01:01.000000');
INSERT INTO "schema_info" VALUES(1);
INSERT INTO "tests" VALUES(1,'019a0000-0000-7000-8000-000000000001','tests/test_a.py::test_ok','passed','call',0.01,NULL,NULL,'[]','{}',NULL);
INSERT INTO "tests" VALUES(2,'019a0000-0000-7000-8000-000000000001','tests/test_a.py::test_bad','failed','call',0.02,'AssertionError',NULL,'[]','{}',NULL);
COMMIT;
