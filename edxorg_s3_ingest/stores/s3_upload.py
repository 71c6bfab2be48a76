"""One S3 object written in parts as its bytes come: a multipart upload begun with its first
part, or a single PUT when the object ends before a part was sent. Used by the lake's FileIO
(lake_io.py) and the data files uploaded while a load reads (lake_uploads.py).

Until `finish` completes it, the object does not exist: an upload begun and never finished is
aborted (`abort`), or left for the bucket's `AbortIncompleteMultipartUpload` rule.
"""

from edxorg_s3_ingest.landing.aws import s3_client


class S3Upload:
    def __init__(self, bucket: str, key: str) -> None:
        self.bucket, self.key = bucket, key
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def send_part(self, body: bytes | bytearray) -> None:
        """Sends the next part (S3 wants 5 MiB or more of each but the last)."""
        client = s3_client()
        if self.upload_id is None:
            answer = client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = answer["UploadId"]
        number = len(self.parts) + 1
        answer = client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self, last: bytes | bytearray) -> None:
        """Writes the object: `last` as its last part, or as the whole object if no part was
        sent."""
        client = s3_client()
        if self.upload_id is None:
            client.put_object(Bucket=self.bucket, Key=self.key, Body=last)
            return
        if last:
            self.send_part(last)
        client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.upload_id = None

    def abort(self) -> None:
        """Drops the parts sent of an upload not finished; nothing to do otherwise."""
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            s3_client().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
