#!/bin/sh
# The pipeline an operator would write without flux-pmi, over the same plain files flux-pmi built:
# per file, validate (xmllint --schema), sign then encrypt (openssl cms, the formats of seal/cms.py),
# then one `sftp -b` session per département. It has none of flux-pmi's guarantees (no atomic
# rename on the server, no trace, no retry, no archive): it is the floor flux-pmi is compared with.
#
# Usage: pipeline.sh MANIFEST PLAIN OUT SCHEMAS PKI CLIENT_KEY KNOWN_HOSTS
#   MANIFEST: one line per département: <code> <port> <user> <remote folder holding in/dsg, in/sgr, in/gro>
#   PLAIN:    <code>/<FLOW>/<file> (the built, unsealed XML/zip files)
#   PKI:      cnaf.crt, cnaf.key (the signer) and <code>.crt (each recipient)
set -eu
manifest=$1 plain=$2 out=$3 schemas=$4 pki=$5 key=$6 known_hosts=$7

seal_file() {  # $1 plain file, $2 flow, $3 département; prints the sealed file's path
    f=$1 name=$(basename "$1")
    case "$name" in
        *.zip) unzip -p "$f" 'CG_*_pmiich.xml' | xmllint --noout --schema "$schemas/sgr.xsd" - 2>/dev/null ;;
        *) xmllint --noout --schema "$schemas/$(echo "$2" | tr 'A-Z' 'a-z').xsd" "$f" 2>/dev/null ;;
    esac
    openssl cms -sign -binary -nodetach -md sha256 -outform DER -in "$f" \
        -signer "$pki/cnaf.crt" -inkey "$pki/cnaf.key" -out "$out/$name.signed"
    openssl cms -encrypt -binary -aes-256-cbc -outform DER -in "$out/$name.signed" \
        -out "$out/$name.p7m" "$pki/$3.crt"
    echo "$out/$name.p7m"
}

while read -r code port user base; do
    batch="$out/$code.sftp"
    : > "$batch"
    for flow in DSG GRO SGR; do
        [ -d "$plain/$code/$flow" ] || continue
        for f in "$plain/$code/$flow"/*; do
            sealed=$(seal_file "$f" "$flow" "$code")
            echo "put $sealed $base/in/$(echo "$flow" | tr 'A-Z' 'a-z')/" >> "$batch"
        done
    done
    sftp -q -F /dev/null -b "$batch" -i "$key" -P "$port" -o BatchMode=yes -o IdentitiesOnly=yes \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known_hosts" "$user@127.0.0.1" < /dev/null > /dev/null
done < "$manifest"
