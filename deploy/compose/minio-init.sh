#!/bin/sh
# Bucket and a least-privilege user for the secmsg services (compose only; in Kubernetes the
# MinIO Operator's tenant does this -- docs/operations.md). Safe to run again.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$SECMSG_S3_BUCKET"
cat > /tmp/secmsg-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$SECMSG_S3_BUCKET"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$SECMSG_S3_BUCKET/*"]}
  ]
}
POLICY
mc admin policy create local secmsg-rw /tmp/secmsg-policy.json
mc admin user add local "$SECMSG_S3_ACCESS_KEY" "$SECMSG_S3_SECRET_KEY"
# "attach" fails when the policy is already attached: accept that case only.
mc admin policy attach local secmsg-rw --user "$SECMSG_S3_ACCESS_KEY" \
  || mc admin user info local "$SECMSG_S3_ACCESS_KEY" | grep -q secmsg-rw
echo "minio-init: bucket $SECMSG_S3_BUCKET and user ready"
