-- Lifecycle policies (ECR's JSON, kept verbatim) per repository or namespace, and the last
-- pull of each manifest (for sinceImagePulled; pull records are pruned, this is not).

CREATE TABLE lifecycle_policies (
    scope       TEXT    PRIMARY KEY,
    policy      TEXT    NOT NULL,
    updated_ms  BIGINT  NOT NULL
);

ALTER TABLE manifests ADD COLUMN last_pulled_ms BIGINT;
