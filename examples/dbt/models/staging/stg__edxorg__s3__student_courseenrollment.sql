with source as (
    select * from {{ source('edxorg_s3', 'raw__edxorg__s3__tables__student_courseenrollment') }}
)

-- edX keeps one enrollment per user and course; the row id alone is not unique across the
-- fixtures' courses.
{{ deduplicate_raw_table(partition_columns='user_id, course_id') }}
, cleaned as (
    select
        cast(id as bigint) as courserunenrollment_id
        , course_id as courserun_readable_id
        , cast(user_id as bigint) as user_id
        , cast(is_active as boolean) as courserunenrollment_is_active
        , mode as courserunenrollment_mode
        , cast(created as timestamp) as courserunenrollment_created_on
        , extracted_course_key as courserun_export_key
    from most_recent_source
)

select * from cleaned
