// Package sqlscan reads PostgreSQL SQL as far as forwarding needs: which
// statements of a text can leave session state on their connection
// (Classify) or drop its prepared statements (ResetsStatements). The
// executor decides by it which primary connections to close after a unit;
// the client, which statements need a pinned connection. It scans the
// text (literals, comments, quoted identifiers, dollar quoting) without
// parsing it, and errs on the side of "may leave state".
package sqlscan
