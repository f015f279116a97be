-- A claim is tagged with a token chosen by the claiming master before its
-- first attempt: a claim retried after an ambiguous COMMIT finds the
-- requests the first attempt claimed instead of claiming more.
ALTER TABLE buildmaster_private.build_requests ADD COLUMN claim_token uuid;
CREATE INDEX build_requests_claim_token ON buildmaster_private.build_requests (claim_token)
    WHERE claim_token IS NOT NULL;
ALTER TABLE buildmaster_private.build_requests ADD CONSTRAINT build_requests_token_only_when_claimed
    CHECK (claim_token IS NULL OR state <> 'pending');
