-- The client addresses each account has signed in from (Unix seconds of the last time). Login throttling trusts
-- them: a flood of wrong passwords from elsewhere exhausts the account's global bucket, but never stops its owner
-- from signing in where she has signed in before (see graphql/users/mutation.rs).
CREATE TABLE sign_in_addresses (
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address   TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (user_id, address)
);
