-- A TestViper history database at schema version 3 (before test reruns), with one
-- labelled run and one key rotation. Frozen: the migration test upgrades it.
BEGIN TRANSACTION;
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
INSERT INTO "component_coverage" VALUES('019c0000-0000-7000-8000-0000000000c3','core',1,10,2,4,3,7.85714285714285694001e+01);
CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	instance VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	launch_uuid VARCHAR(36), 
	attempts INTEGER NOT NULL, 
	last_error TEXT, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_deliveries_run_instance UNIQUE (run_id, instance), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
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
INSERT INTO "file_coverage" VALUES('019c0000-0000-7000-8000-0000000000c3','src/m.py',10,2,0,4,3,7.85714285714285694001e+01,'1-3,5','7-8');
CREATE TABLE key_rotations (
	id INTEGER NOT NULL, 
	instance VARCHAR(200) NOT NULL, 
	variable VARCHAR(200) NOT NULL, 
	rotated_at DATETIME NOT NULL, 
	fingerprint VARCHAR(16) NOT NULL, 
	previous_fingerprint VARCHAR(16), 
	overlap BOOLEAN NOT NULL, 
	old_key VARCHAR(20) NOT NULL, 
	actor VARCHAR(255), 
	host VARCHAR(255), 
	PRIMARY KEY (id)
);
INSERT INTO "key_rotations" VALUES(1,'main','RP_API_KEY','2026-11-01 00:00:00.000000','abc123',NULL,1,'kept',NULL,NULL);
CREATE TABLE profiles (
	id INTEGER NOT NULL, 
	run_id VARCHAR(36), 
	target TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	wall FLOAT NOT NULL, 
	peak_rss BIGINT, 
	cpu_mean FLOAT, 
	cpu_peak FLOAT, 
	children INTEGER, 
	read_bytes BIGINT, 
	write_bytes BIGINT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE SET NULL
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
	label VARCHAR(200), 
	PRIMARY KEY (id)
);
INSERT INTO "runs" VALUES('019c0000-0000-7000-8000-0000000000c3','legacy3','complete',1,'2026-11-01 12:00:00.000000','2026-11-01 12:00:30.000000',30.0,'abc','main',NULL,NULL,NULL,NULL,'{"CI": "true"}','["pytest"]','/tmp/r',2,1,1,0,0,0,0,10,2,4,3,7.85714285714285694001e+01,'2026-11-01 12:01:00.000000','xradio');
CREATE TABLE schema_info (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_info" VALUES(3);
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
INSERT INTO "tests" VALUES(1,'019c0000-0000-7000-8000-0000000000c3','t.py::a','passed','call',0.1,NULL,NULL,'[]','{}',NULL);
INSERT INTO "tests" VALUES(2,'019c0000-0000-7000-8000-0000000000c3','t.py::b','failed','call',0.2,'boom',NULL,'["slow"]','{"n": "1"}',NULL);
CREATE INDEX ix_runs_git_branch ON runs (git_branch);
CREATE INDEX ix_runs_started_at ON runs (started_at);
CREATE INDEX ix_key_rotations_instance ON key_rotations (instance);
CREATE INDEX ix_tests_nodeid ON tests (nodeid);
CREATE INDEX ix_tests_run_id ON tests (run_id);
COMMIT;
