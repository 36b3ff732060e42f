-- Storage quotas per namespace, over the unique blobs its manifests reference.

CREATE TABLE quotas (
    namespace    TEXT    PRIMARY KEY,
    limit_bytes  BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL
);
