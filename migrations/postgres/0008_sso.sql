-- Single sign-on: where an account comes from, and who set a membership. Accounts made by a
-- login through a directory or an identity provider have no password here; their group
-- memberships set namespace roles, which the next login refreshes (and takes away). A role set
-- by a namespace's manager is 'local' and no provider changes it.

ALTER TABLE accounts ADD COLUMN origin TEXT NOT NULL DEFAULT 'local';          -- 'local', 'ldap' or 'oidc'
ALTER TABLE namespace_members ADD COLUMN source TEXT NOT NULL DEFAULT 'local'; -- 'local', 'ldap' or 'oidc'
